// posmon dashboard: plain JavaScript, no build step, no external asset. Hash routes:
// #/ overview, #/problems?filters, #/terminal/<id>, #/versions, #/config, #/alerts (and
// operations.js's #/terminals, #/maintenance, #/activity). Every view polls
// the API every refresh interval, so new findings appear without a reload.
"use strict";

const STRINGS = {
  "en": {
    "nav.overview": "Overview", "nav.problems": "Problems", "nav.versions": "Versions", "nav.alerts": "Alerts",
    "lang.other": "中文", "updated": "Updated {time}", "times.zone": "Every time on this page is in {zone}, 24-hour.", "loading": "Loading…", "error": "Cannot load: {error}",
    "readiness.cannot_pay": "Cannot take payments", "readiness.at_risk": "At risk", "readiness.can_pay": "Can pay",
    "readiness.unknown": "Unknown", "readiness.why": "Why", "readiness.stops": "Stops payments", "terminals": "Terminals",
    "of.fleet": "{share} of the fleet", "outage.title": "Upstream outage", "outage.explains": "{count} terminal findings explained",
    "outage.since": "since {time}", "outage.evidence": "{inside} of {total} failing; elsewhere {outside} %", "outage.evidence.all": "{inside} of {total} failing",
    "outage.loading": "Loading the terminal findings…", "outage.none": "No terminal finding explained now.",
    "dim.target": "host", "dim.region": "region", "dim.carrier": "carrier", "dim.model": "model", "dim.firmware": "firmware",
    "dim.pos_app": "POS app", "dim.merchant": "merchant", "dim.gateway": "gateway", "dim.resolver": "resolver", "by.category": "Open findings by category", "by.party": "Who must act (terminals)",
    "by.party.cause": "{party}: {count} fleet-wide cause(s), terminals not known",
    "by.code": "Open findings by code", "by.severity": "Open findings by severity", "trend": "Trend, last {hours} h",
    "trend.empty": "The trend fills in as the collector takes a point every {seconds} s.",
    "no.findings": "No open findings.",
    "category.environment": "Environment", "category.outdated": "Outdated software", "category.availability": "Silent terminals",
    "category.upstream": "Upstream outage",
    "party.merchant": "Merchant", "party.pos_vendor": "POS vendor", "party.network_provider": "Network provider",
    "party.software_vendor": "Software vendor", "party.acquirer": "Acquirer", "party.operations": "Operations",
    "severity.warning": "Warning", "severity.critical": "Critical",
    "filter.region": "Region", "filter.model": "Model", "filter.carrier": "Carrier", "filter.code": "Finding",
    "filter.party": "Party", "filter.severity": "Severity", "filter.q": "Terminal id", "filter.all": "All",
    "filter.readiness": "Payments",
    "filter.sort": "Sort", "sort.readiness": "Cannot pay first", "sort.since": "Oldest first", "sort.findings": "Most findings",
    "sort.terminal": "Terminal id", "filter.clear": "Clear",
    "problems.title": "Problems", "problems.count": "{total} terminals with problems",
    "col.terminal": "Terminal", "col.readiness": "Payments", "col.region": "Region", "col.model": "Model", "col.carrier": "Carrier",
    "col.findings": "Findings", "col.since": "Since", "col.last_seen": "Last report",
    "page.prev": "‹ Previous", "page.next": "Next ›", "page.of": "{from}–{to} of {total}",
    "terminal.title": "Terminal {id}", "terminal.identity": "Identity", "terminal.labels": "Labels",
    "terminal.merchant": "Merchant", "terminal.gateway": "Gateway subnet", "terminal.resolver": "Resolver", "terminal.agent": "Agent version", "terminal.first_seen": "First report",
    "terminal.last_seen": "Last report", "terminal.observed_at": "Measured at", "terminal.path": "Network path",
    "terminal.instance": "Agent instance", "terminal.resets": "Restarted from sequence 1: {count}×, last {time}",
    "terminal.no_resets": "sequence {sequence}, never restarted",
    "terminal.latency": "Latency (ms)", "terminal.versions": "Software versions", "terminal.device": "Device",
    "terminal.findings": "Findings", "terminal.open": "open", "terminal.closed": "closed at {time}",
    "terminal.closed_after": "closed at {time} after {duration}", "terminal.closed_badge": "Closed",
    "duration.d": "{n} d", "duration.h": "{n} h", "duration.m": "{n} min", "duration.s": "{n} s",
    "terminal.suppressed": "explained by an upstream outage", "terminal.remediation": "What to do",
    "terminal.no_device": "This terminal reports no device data.", "terminal.unknown": "No terminal {id} has reported.",
    "terminal.back": "‹ Problems", "terminal.no_latency": "No latency measured yet.",
    "rung.ok": "works", "rung.failed": "fails", "rung.not_reached": "not reached",
    "col.component": "Component", "col.version": "Version", "col.policy": "Policy", "col.compliance": "Compliance",
    "compliance.current": "current", "compliance.behind": "behind", "compliance.outdated": "outdated", "compliance.no_rule": "no rule",
    "policy.none": "no rule", "policy.minimum": "minimum {v}", "policy.latest": "latest {v}",
    "device.cpu": "CPU", "device.memory": "Memory available", "device.disk": "Fullest disk free",
    "device.temperature": "Hottest sensor", "device.battery": "Battery", "device.charging": "charging",
    "device.uptime": "Uptime", "device.clock": "Clock offset", "device.peripherals": "Peripherals",
    "device.processes": "Processes", "present": "present", "missing": "missing", "running": "running", "stopped": "stopped",
    "versions.title": "Version compliance", "versions.share": "Share outdated", "col.terminals": "Terminals",
    "col.behind": "Behind", "col.outdated": "Outdated", "versions.empty": "No terminal has reported versions yet.",
    "versions.policy": "Version policy", "versions.no_policy": "No version policy is set.",
    "alerts.title": "Alert notifications", "alerts.unavailable": "Alert routing is not configured or not available on this collector.",
    "alerts.empty": "No notifications sent yet.",
    "alerts.no_receiver": "No alert receiver is configured: no notification will be sent, to anybody.",
    "alerts.no_receiver.how": "Findings still open and close here. To be notified, add a receiver under [[alerts.receivers]] in the collector's config file (kind = webhook, dingtalk, wecom, feishu, email or alertmanager), send findings to it with alerts.default_receiver or [[alerts.routes]] (see the README's Alerts section and posmon-collector print-default-config), and restart the collector.", "col.receiver": "Receiver", "col.delivery": "Delivery",
    "col.attempts": "Attempts", "col.last_error": "Last error", "col.time": "Time", "col.finding": "Finding",
    "ago.s": "{n} s ago", "ago.m": "{n} min ago", "ago.h": "{n} h ago", "ago.d": "{n} d ago",
    "usage.near": "Near data budget", "usage.near.share": "of {count} terminals reporting data usage",
    "usage.total": "Agents' data this month ({month})", "usage.kinds": "reports {report} · probes {probe} · other {other}",
    "terminal.data_usage": "Data this month", "usage.of_budget": "{total} of {budget} ({percent} %)",
    "usage.no_budget": "{total}, no budget", "usage.projected": "month projected at {bytes} ({percent} %)",
    "usage.stretched": "intervals stretched ×{factor}", "usage.near_badge": "near budget", "usage.old": "figures of {month}",
    "usage.near.list": "The terminals nearest their budget", "usage.near.none": "No terminal is near its budget now.",
    "nav.config": "Config", "control.title": "Configuration and probe", "control.applied": "Settings running",
    "control.local": "its local file only", "control.effective": "Settings due", "control.pending": "not taken yet",
    "control.rejected": "Refused", "control.unknown": "This agent does not report its settings (before fleet control).",
    "probe.now": "Probe now", "probe.requested": "Probe requested by {by} at {time}", "probe.answered": "answered at {time}",
    "probe.waiting": "waiting for the terminal…", "probe.sent": "Probe requested; the terminal answers within seconds.",
    "probe.none": "No probe requested.", "probe.page": "Probe these now", "probe.page.sent": "Probe requested for {count} terminals.", "admin.prompt": "Admin token (kept for this browser tab only):",
    "admin.refused": "The admin token was refused.",
    "config.title": "Fleet configuration", "config.versions": "Settings versions", "config.pending": "Pending",
    "config.unknown": "Not reporting settings", "col.assigned": "Assigned", "col.running": "Running", "col.rejected": "Refused",
    "config.profiles": "Profiles", "config.no_profiles": "No profile: every agent runs its local file.",
    "col.profile": "Profile", "col.selector": "Applies to", "col.revision": "Revision", "col.rollout": "Rollout",
    "col.updated": "Changed", "col.by": "By", "col.comment": "Comment", "col.action": "Change", "config.settings": "settings",
    "config.history": "History", "config.no_history": "No change yet.", "selector.all": "every terminal",
    "rollout.all": "all", "rollout.percent": "{percent} %", "rollout.label": "label {key}={value}",
  },
  "zh-CN": {
    "nav.overview": "总览", "nav.problems": "问题列表", "nav.versions": "版本合规", "nav.alerts": "告警",
    "lang.other": "English", "updated": "更新于 {time}", "times.zone": "本页所有时间均为 {zone}，24 小时制。", "loading": "加载中…", "error": "无法加载：{error}",
    "readiness.cannot_pay": "无法收款", "readiness.at_risk": "存在风险", "readiness.can_pay": "可以收款",
    "readiness.unknown": "未知", "readiness.why": "原因", "readiness.stops": "导致无法收款", "terminals": "终端总数",
    "of.fleet": "占全部终端 {share}", "outage.title": "上游故障", "outage.explains": "解释了 {count} 个终端问题",
    "outage.since": "开始于 {time}", "outage.evidence": "{total} 台中 {inside} 台故障；其他范围 {outside} %", "outage.evidence.all": "{total} 台中 {inside} 台故障",
    "outage.loading": "正在加载终端问题…", "outage.none": "当前没有被解释的终端问题。",
    "dim.target": "主机", "dim.region": "地区", "dim.carrier": "运营商", "dim.model": "型号", "dim.firmware": "固件",
    "dim.pos_app": "收银应用", "dim.merchant": "商户", "dim.gateway": "网关", "dim.resolver": "DNS 服务器", "by.category": "未关闭问题（按类别）", "by.party": "责任方（终端数）",
    "by.party.cause": "{party}：{count} 个全网性原因，受影响终端未知",
    "by.code": "未关闭问题（按代码）", "by.severity": "未关闭问题（按严重程度）", "trend": "趋势（最近 {hours} 小时）",
    "trend.empty": "采集器每 {seconds} 秒记录一个点，趋势图将逐渐填满。",
    "no.findings": "没有未关闭的问题。",
    "category.environment": "环境", "category.outdated": "软件过旧", "category.availability": "终端失联",
    "category.upstream": "上游故障",
    "party.merchant": "商户", "party.pos_vendor": "POS 厂商", "party.network_provider": "网络运营商",
    "party.software_vendor": "软件供应商", "party.acquirer": "收单机构", "party.operations": "运维团队",
    "severity.warning": "警告", "severity.critical": "严重",
    "filter.region": "地区", "filter.model": "型号", "filter.carrier": "运营商", "filter.code": "问题",
    "filter.party": "责任方", "filter.severity": "严重程度", "filter.q": "终端编号", "filter.all": "全部",
    "filter.readiness": "收款状态",
    "filter.sort": "排序", "sort.readiness": "无法收款优先", "sort.since": "最早开始", "sort.findings": "问题最多",
    "sort.terminal": "终端编号", "filter.clear": "清除",
    "problems.title": "问题列表", "problems.count": "{total} 台终端存在问题",
    "col.terminal": "终端", "col.readiness": "收款状态", "col.region": "地区", "col.model": "型号", "col.carrier": "运营商",
    "col.findings": "问题", "col.since": "开始时间", "col.last_seen": "最近上报",
    "page.prev": "‹ 上一页", "page.next": "下一页 ›", "page.of": "第 {from}–{to} 条，共 {total} 条",
    "terminal.title": "终端 {id}", "terminal.identity": "基本信息", "terminal.labels": "标签",
    "terminal.merchant": "商户", "terminal.gateway": "网关子网", "terminal.resolver": "DNS 服务器", "terminal.agent": "代理版本", "terminal.first_seen": "首次上报",
    "terminal.last_seen": "最近上报", "terminal.observed_at": "测量时间", "terminal.path": "网络路径",
    "terminal.instance": "代理实例", "terminal.resets": "序号已从 1 重新开始：{count} 次，最近一次 {time}",
    "terminal.no_resets": "序号 {sequence}，未重新开始",
    "terminal.latency": "延迟（毫秒）", "terminal.versions": "软件版本", "terminal.device": "设备状态",
    "terminal.findings": "问题记录", "terminal.open": "未关闭", "terminal.closed": "已于 {time} 关闭",
    "terminal.closed_after": "已于 {time} 关闭，持续 {duration}", "terminal.closed_badge": "已关闭",
    "duration.d": "{n} 天", "duration.h": "{n} 小时", "duration.m": "{n} 分钟", "duration.s": "{n} 秒",
    "terminal.suppressed": "已由上游故障解释", "terminal.remediation": "处理建议",
    "terminal.no_device": "该终端未上报设备数据。", "terminal.unknown": "没有编号为 {id} 的终端上报过数据。",
    "terminal.back": "‹ 问题列表", "terminal.no_latency": "尚无延迟数据。",
    "rung.ok": "正常", "rung.failed": "失败", "rung.not_reached": "未到达",
    "col.component": "组件", "col.version": "版本", "col.policy": "策略", "col.compliance": "合规",
    "compliance.current": "最新", "compliance.behind": "落后", "compliance.outdated": "过旧", "compliance.no_rule": "无规则",
    "policy.none": "无规则", "policy.minimum": "最低 {v}", "policy.latest": "最新 {v}",
    "device.cpu": "CPU", "device.memory": "可用内存", "device.disk": "最满磁盘剩余",
    "device.temperature": "最高温度", "device.battery": "电池", "device.charging": "充电中",
    "device.uptime": "运行时间", "device.clock": "时钟偏差", "device.peripherals": "外设",
    "device.processes": "进程", "present": "在位", "missing": "缺失", "running": "运行中", "stopped": "未运行",
    "versions.title": "版本合规", "versions.share": "过旧占比", "col.terminals": "终端数",
    "col.behind": "落后", "col.outdated": "过旧", "versions.empty": "尚无终端上报版本。",
    "versions.policy": "版本策略", "versions.no_policy": "尚未设置版本策略。",
    "alerts.title": "告警通知", "alerts.unavailable": "此采集器未配置告警路由或告警路由不可用。",
    "alerts.empty": "尚未发送任何通知。",
    "alerts.no_receiver": "未配置任何告警接收方：不会向任何人发送通知。",
    "alerts.no_receiver.how": "问题仍会在此打开和关闭。如需接收通知，请在采集器配置文件的 [[alerts.receivers]] 下添加接收方（kind = webhook、dingtalk、wecom、feishu、email 或 alertmanager），并通过 alerts.default_receiver 或 [[alerts.routes]] 将问题发送给它（参见 README 的告警一节和 posmon-collector print-default-config），然后重启采集器。", "col.receiver": "接收方", "col.delivery": "投递状态",
    "col.attempts": "尝试次数", "col.last_error": "最近错误", "col.time": "时间", "col.finding": "问题",
    "ago.s": "{n} 秒前", "ago.m": "{n} 分钟前", "ago.h": "{n} 小时前", "ago.d": "{n} 天前",
    "usage.near": "接近流量预算", "usage.near.share": "共 {count} 台终端上报流量",
    "usage.total": "本月代理流量（{month}）", "usage.kinds": "上报 {report} · 探测 {probe} · 其他 {other}",
    "terminal.data_usage": "本月流量", "usage.of_budget": "{total}，预算 {budget}（{percent} %）",
    "usage.no_budget": "{total}，未设预算", "usage.projected": "预计全月 {bytes}（{percent} %）",
    "usage.stretched": "间隔已延长 ×{factor}", "usage.near_badge": "接近预算", "usage.old": "{month} 的数据",
    "usage.near.list": "最接近预算的终端", "usage.near.none": "当前没有接近预算的终端。",
    "nav.config": "配置", "control.title": "配置与即时探测", "control.applied": "运行中的配置",
    "control.local": "仅本地配置文件", "control.effective": "应运行的配置", "control.pending": "尚未生效",
    "control.rejected": "已拒绝", "control.unknown": "该代理不上报配置状态（早于集中配置的版本）。",
    "probe.now": "立即探测", "probe.requested": "{by} 于 {time} 请求探测", "probe.answered": "已于 {time} 响应",
    "probe.waiting": "等待终端响应…", "probe.sent": "已请求探测，终端将在数秒内响应。",
    "probe.none": "尚未请求探测。", "probe.page": "立即探测本页终端", "probe.page.sent": "已请求 {count} 台终端立即探测。", "admin.prompt": "管理员令牌（仅保存在当前浏览器标签页）：",
    "admin.refused": "管理员令牌被拒绝。",
    "config.title": "集中配置", "config.versions": "配置版本", "config.pending": "待生效",
    "config.unknown": "未上报配置状态", "col.assigned": "应运行", "col.running": "运行中", "col.rejected": "已拒绝",
    "config.profiles": "配置档案", "config.no_profiles": "没有配置档案：所有代理使用本地配置文件。",
    "col.profile": "档案", "col.selector": "适用范围", "col.revision": "修订号", "col.rollout": "灰度发布",
    "col.updated": "修改时间", "col.by": "修改人", "col.comment": "说明", "col.action": "变更", "config.settings": "配置内容",
    "config.history": "变更历史", "config.no_history": "尚无变更。", "selector.all": "全部终端",
    "rollout.all": "全部", "rollout.percent": "{percent} %", "rollout.label": "标签 {key}={value}",
  },
};

const PARTIES = ["merchant", "pos_vendor", "network_provider", "software_vendor", "acquirer", "operations"];
const CATEGORIES = ["environment", "outdated", "availability", "upstream"];
// Payment readiness, most urgent first: the headline of every view.
const READINESS = ["cannot_pay", "at_risk", "unknown", "can_pay"];
const REFRESH_MS = 1000 * Math.max(1, Number(document.querySelector('meta[name="posmon-refresh-seconds"]')?.content) || 5);
const PAGE_SIZE = 50;

let lang = localStorage.getItem("posmon.lang") || ((navigator.language || "").startsWith("zh") ? "zh-CN" : "en");
if (!STRINGS[lang]) lang = "en";
// A page parameter from the query string (`/?lang=zh-CN&kiosk=1`) or, when `fromHash`, from the
// hash's (`#/problems?lang=zh-CN`): a wall screen's URL chooses its language and kiosk mode.
function pageParam(name, fromHash = true) {
  const hash = location.hash.split("?")[1];
  const inHash = fromHash && hash ? new URLSearchParams(hash).get(name) : null;
  return inHash ?? new URLSearchParams(location.search).get(name);
}
// `lang=en|zh-CN` (`zh`, any case, too) chooses the language and keeps it, as the toggle does.
function langFromUrl(fromHash) {
  const wanted = (pageParam("lang", fromHash) || "").toLowerCase();
  const chosen = Object.keys(STRINGS).find(name => name.toLowerCase() === wanted || name.toLowerCase().split("-")[0] === wanted);
  if (!chosen || chosen === lang) return false;
  lang = chosen;
  localStorage.setItem("posmon.lang", lang);
  return true;
}
langFromUrl(true);
// Kiosk mode (`kiosk=1`, off with `kiosk=0`) for a wall screen: no navigation or buttons,
// larger type, always refreshing; kept for the tab, so that following a link keeps it.
function kioskFromUrl() {
  const wanted = pageParam("kiosk");
  if (wanted === "1" || wanted === "true") sessionStorage.setItem("posmon.kiosk", "1");
  else if (wanted === "0" || wanted === "false") sessionStorage.removeItem("posmon.kiosk");
  document.documentElement.classList.toggle("kiosk", sessionStorage.getItem("posmon.kiosk") === "1");
}
kioskFromUrl();
let timer = null;
let renderedRoute = null;
let overviewCache = null;
// Outage banners whose explained terminal findings are unfolded: kept across refreshes.
const unfoldedOutages = new Set();
// Whether the list of terminals near their data budget is unfolded: kept across refreshes.
let unfoldedNearBudget = false;
const NEAR_BUDGET_LIST = 20;

function t(key, values) {
  let text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  for (const [name, value] of Object.entries(values || {})) text = text.replaceAll(`{${name}}`, value);
  return text;
}
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function text(textValue) { return textValue ? (textValue[lang] ?? textValue.en ?? "") : ""; }
function fmtNumber(n) { return Number(n || 0).toLocaleString(lang); }
// Bytes in binary units: a SIM card's plan is counted in MiB.
function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n || 0), unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toLocaleString(lang, { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
}
// A terminal's data usage in one line: the month so far against its budget, the projection,
// the stretch.
function usageLine(usage) {
  const parts = [usage.budget_bytes
    ? t("usage.of_budget", { total: fmtBytes(usage.total_bytes), budget: fmtBytes(usage.budget_bytes), percent: fmtNumber(usage.budget_percent) })
    : t("usage.no_budget", { total: fmtBytes(usage.total_bytes) })];
  if (!usage.current) parts.push(t("usage.old", { month: usage.month }));
  else if (usage.projected_percent != null) parts.push(t("usage.projected", { bytes: fmtBytes(usage.projected_bytes), percent: fmtNumber(usage.projected_percent) }));
  if (usage.stretch_percent > 100) parts.push(t("usage.stretched", { factor: (usage.stretch_percent / 100).toLocaleString(lang, { maximumFractionDigits: 2 }) }));
  return esc(parts.join(" · ")) + (usage.near_budget ? " " + badge("warning", t("usage.near_badge")) : "");
}
// Times as `YYYY-MM-DD HH:MM:SS`, 24-hour, in the browser's time zone, the same in every
// language; the zone is named once, in the header (zoneText).
const pad2 = n => String(n).padStart(2, "0");
function fmtClock(date, seconds = true) {
  return `${pad2(date.getHours())}:${pad2(date.getMinutes())}${seconds ? ":" + pad2(date.getSeconds()) : ""}`;
}
function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const date = typeof seconds === "number" ? new Date(seconds * 1000) : new Date(seconds);
  if (Number.isNaN(date.getTime())) return "";
  return `${String(date.getFullYear()).padStart(4, "0")}-${pad2(date.getMonth() + 1)}-${pad2(date.getDate())} ${fmtClock(date)}`;
}
// The browser's time zone: its UTC offset now, and its name (Asia/Shanghai) when known.
function zoneText() {
  const offset = -new Date().getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  const utc = `UTC${sign}${pad2(Math.floor(Math.abs(offset) / 60))}:${pad2(Math.abs(offset) % 60)}`;
  const name = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return name && !/^(Etc\/)?(UTC|GMT)$/.test(name) ? `${utc} ${name}` : utc;
}
function ago(seconds) {
  const at = typeof seconds === "number" ? seconds * 1000 : Date.parse(seconds);
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  if (s < 90) return t("ago.s", { n: s });
  if (s < 5400) return t("ago.m", { n: Math.round(s / 60) });
  if (s < 172800) return t("ago.h", { n: Math.round(s / 3600) });
  return t("ago.d", { n: Math.round(s / 86400) });
}
// The kinds of finding by code (`/api/v1/kinds`), fetched once: a page that holds only a code
// names it.
let kinds = null;
let kindsLoading = null;
function loadKinds() {
  if (kinds) return Promise.resolve(kinds);
  kindsLoading ??= api("/api/v1/kinds").then(answer => {
    kinds = Object.fromEntries((answer.kinds || []).map(kind => [kind.code, kind]));
    return kinds;
  }).finally(() => { kindsLoading = null; });
  return kindsLoading;
}
// A finding's name from its code (the code itself for one the collector does not know).
function codeName(code) { return text(kinds?.[code]?.title) || code; }
// The name, with the raw code as its tooltip for engineers.
function codeLabel(code) { return `<span class="code-name" data-code="${esc(code)}" title="${esc(code)}">${esc(codeName(code))}</span>`; }
function badge(kind, label) { return `<span class="badge ${esc(kind)}">${esc(label)}</span>`; }
// A shared cause's scope (`region=cn-south,target=payment-host`) in words.
function scopeText(subject) {
  return String(subject || "").split(",").filter(Boolean).map(pair => {
    const [name, value] = pair.split("=");
    return `${t("dim." + name)} ${value ?? ""}`;
  }).join(" · ");
}
function evidenceOf(finding, name) { return (finding.evidence || []).find(e => e.name === name)?.value; }
async function unfoldOutage(node) {
  const list = node.querySelector(".explained-list");
  list.innerHTML = `<li class="muted">${esc(t("outage.loading"))}</li>`;
  const answer = await api("/api/v1/findings?suppressed=only&limit=1000");
  const explained = (answer.findings || []).filter(f => String(f.suppressed_by) === node.dataset.outage);
  list.innerHTML = explained.length ? explained.map(f => `<li><a href="#/terminal/${encodeURIComponent(f.terminal_id)}">${esc(f.terminal_id)}</a> — ${esc(text(f.title))}${f.subject ? " · " + esc(f.subject) : ""}</li>`).join("")
    : `<li class="muted">${esc(t("outage.none"))}</li>`;
}
async function unfoldNearBudget(node) {
  const list = node.querySelector(".near-list");
  list.innerHTML = `<li class="muted">${esc(t("loading"))}</li>`;
  const answer = await api(`/api/v1/terminals?budget=near&sort=data_usage&limit=${NEAR_BUDGET_LIST}`);
  const terminals = answer.terminals || [];
  list.innerHTML = terminals.length ? terminals.map(terminal => `<li data-terminal="${esc(terminal.terminal_id)}"><a href="#/terminal/${encodeURIComponent(terminal.terminal_id)}">${esc(terminal.terminal_id)}</a> — ${terminal.data_usage ? usageLine(terminal.data_usage) : ""}</li>`).join("")
    : `<li class="muted">${esc(t("usage.near.none"))}</li>`;
}
function partyBadge(party) { return `<span class="badge party" data-party="${esc(party)}">${esc(t("party." + party))}</span>`; }

async function api(path) {
  const response = await fetch(path, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
  if (!response.ok) {
    const error = new Error(`${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// The views by route name: `#/<name>` renders `render(main, route, fresh)` and marks the nav
// link whose data-view is `nav`. Other scripts (loaded after this one, before the page's
// DOMContentLoaded) add theirs with registerView and their texts with addStrings.
const VIEWS = {};
function registerView(name, render, nav) { VIEWS[name] = { render, nav: nav || name }; }
function addStrings(table) {
  for (const [language, strings] of Object.entries(table)) Object.assign(STRINGS[language], strings);
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "terminal" && parts[1]) return { view: "terminal", id: decodeURIComponent(parts.slice(1).join("/")), params };
  if (parts[0] && parts[0] !== "terminal" && VIEWS[parts[0]]) return { view: parts[0], params };
  return { view: "overview", params };
}

function applyStaticText() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach(node => { node.textContent = t(node.dataset.i18n); });
  document.getElementById("lang-toggle").textContent = t("lang.other");
}

async function refresh() {
  clearTimeout(timer);
  const current = route();
  document.querySelectorAll("#nav a").forEach(a => a.classList.toggle("active", a.dataset.view === VIEWS[current.view].nav));
  const main = document.getElementById("main");
  const key = location.hash + "|" + lang;
  // Someone typing in a form of this page: not redrawn under them, looked at again later.
  const typing = document.activeElement;
  if (renderedRoute === key && main.contains(typing) && ["INPUT", "TEXTAREA", "SELECT"].includes(typing.tagName)) {
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  if (renderedRoute !== key) main.innerHTML = `<p class="muted">${esc(t("loading"))}</p>`;
  try {
    await loadKinds();
    await VIEWS[current.view].render(main, current, renderedRoute !== key);
    renderedRoute = key;
    const updated = document.getElementById("updated");
    updated.textContent = t("updated", { time: `${fmtTime(Date.now() / 1000)} (${zoneText()})` });
    updated.title = t("times.zone", { zone: zoneText() });
  } catch (error) {
    main.innerHTML = `<p class="error">${esc(t("error", { error: error.message }))}</p>`;
    renderedRoute = null;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

// ---------- overview ----------
function barList(counts, total, kind, labelOf, attribute) {
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return `<p class="muted">${esc(t("no.findings"))}</p>`;
  const max = Math.max(...entries.map(e => e[1]), 1);
  return `<div class="bars">${entries.map(([name, count]) => `
    <span class="name" ${attribute}="${esc(name)}" title="${esc(name)}">${esc(labelOf(name))}</span>
    <span class="track"><span class="fill ${esc(kind(name))}" data-width="${(100 * count / max).toFixed(1)}"></span></span>
    <span class="num">${fmtNumber(count)}</span>`).join("")}</div>`;
}

function trendChart(points, intervalSeconds) {
  if (points.length < 2) return `<p class="muted">${esc(t("trend.empty", { seconds: intervalSeconds }))}</p>`;
  const width = 1000, height = 220, left = 48, bottom = 24, top = 10;
  const series = [["cannot_pay", "var(--critical)"], ["at_risk", "var(--warning)"], ["unknown", "var(--muted)"], ["can_pay", "var(--ok)"]];
  const max = Math.max(1, ...points.map(p => Math.max(...series.map(([name]) => p[name] || 0))));
  const first = points[0].at, last = points[points.length - 1].at, span = Math.max(1, last - first);
  const x = at => left + (width - left - 8) * (at - first) / span;
  const y = v => top + (height - top - bottom) * (1 - v / max);
  const lines = series.map(([name, colour]) => `<polyline fill="none" stroke="${colour}" stroke-width="3" points="${points.map(p => `${x(p.at).toFixed(1)},${y(p[name] || 0).toFixed(1)}`).join(" ")}"/>`).join("");
  const ticks = [0, 0.5, 1].map(f => `<text x="${left - 6}" y="${y(max * f) + 4}" text-anchor="end">${fmtNumber(Math.round(max * f))}</text><line class="axis" x1="${left}" x2="${width}" y1="${y(max * f)}" y2="${y(max * f)}"/>`).join("");
  const times = [first, (first + last) / 2, last].map((at, i) => `<text x="${x(at)}" y="${height - 4}" text-anchor="${["start", "middle", "end"][i]}">${esc(fmtClock(new Date(at * 1000), false))}</text>`).join("");
  const legend = series.map(([name]) => `<span><i class="swatch-${name}"></i>${esc(t("readiness." + name))}</span>`).join("");
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img">${ticks}${lines}${times}</svg><div class="legend">${legend}</div>`;
}

async function viewOverview(main) {
  const [overview, trend] = await Promise.all([api("/api/v1/overview"), api("/api/v1/trend?hours=24")]);
  overviewCache = overview;
  const total = overview.terminals || 0;
  const share = n => total ? `${(100 * n / total).toFixed(1)} %` : "–";
  const readiness = overview.readiness || {};
  const outages = (overview.outages || []).map(o => {
    const share = evidenceOf(o, "share_outside_percent");
    const key = evidenceOf(o, "total_outside") === "0" ? "outage.evidence.all" : "outage.evidence";
    const evidence = share === undefined ? "" : `<div class="detail">${esc(t(key, { inside: evidenceOf(o, "failing_inside"), total: evidenceOf(o, "total_inside"), outside: share }))}</div>`;
    return `
    <div class="outage" data-code="${esc(o.code)}">
      <span class="icon">⚠</span>
      <div><div class="what">${esc(t("outage.title"))}: ${esc(text(o.title))} — ${esc(scopeText(o.subject))}</div>
      ${evidence}
      <div class="detail">${esc(t("outage.since", { time: ago(o.since) }))} · ${partyBadge(o.party)}</div>
      <div class="detail">${esc(text(o.remediation))}</div>
      <details class="explained" data-outage="${esc(o.id)}"${unfoldedOutages.has(String(o.id)) ? " open" : ""}><summary>${esc(t("outage.explains", { count: o.explains ?? 0 }))}</summary><ul class="explained-list"></ul></details></div>
    </div>`;
  }).join("");
  const tile = (kind, label, value, extra) => `<div class="panel tile ${kind}" id="readiness-${kind}" data-readiness="${kind}"><div class="label">${esc(label)}</div><div class="value">${fmtNumber(value)}</div><div class="share">${esc(extra)}</div></div>`;
  const findings = overview.findings || {};
  const usage = overview.data_usage || {};
  // Who must act, in terminals (a terminal with two network findings counts once).
  const act = overview.who_must_act || {};
  main.innerHTML = `
    <h1>${esc(t("nav.overview"))}</h1>
    <div id="outages">${outages}</div>
    <div class="grid tiles" id="readiness">
      ${READINESS.map(kind => tile(kind, t("readiness." + kind), readiness[kind] || 0, t("of.fleet", { share: share(readiness[kind] || 0) }))).join("")}
      ${tile("total", t("terminals"), total, "")}
    </div>
    <div class="grid cols2 mt" id="data-usage">
      <div class="panel tile ${usage.near_budget ? "warning" : "ok"}" id="usage-near" data-count="${esc(usage.near_budget || 0)}"><div class="label">${esc(t("usage.near"))}</div><div class="value">${fmtNumber(usage.near_budget)}</div><div class="share">${esc(t("usage.near.share", { count: fmtNumber(usage.terminals_reporting) }))}</div>
        ${usage.near_budget ? `<details class="near" id="usage-near-details"${unfoldedNearBudget ? " open" : ""}><summary>${esc(t("usage.near.list"))}</summary><ul class="near-list"></ul></details>` : ""}</div>
      <div class="panel tile total" id="usage-total" data-bytes="${esc(usage.total_bytes || 0)}"><div class="label">${esc(t("usage.total", { month: usage.month || "" }))}</div><div class="value">${esc(fmtBytes(usage.total_bytes))}</div><div class="share">${esc(t("usage.kinds", { report: fmtBytes(usage.report_bytes), probe: fmtBytes(usage.probe_bytes), other: fmtBytes(usage.other_bytes) }))}</div></div>
    </div>
    <div class="grid cols2 mt">
      <section class="panel"><h2>${esc(t("by.category"))}</h2>${barList(findings.category, total, n => n, n => t("category." + n), "data-category")}</section>
      <section class="panel" id="by-party"><h2>${esc(t("by.party"))}</h2>${barList(act.terminals, total, () => "", n => t("party." + n), "data-party")}
        ${Object.entries(act.fleet_wide_causes || {}).map(([party, count]) => `<p class="muted" data-cause="${esc(party)}">${esc(t("by.party.cause", { party: t("party." + party), count: fmtNumber(count) }))}</p>`).join("")}</section>
    </div>
    <section class="panel mt" id="trend"><h2>${esc(t("trend", { hours: 24 }))}</h2>${trendChart(trend.points || [], trend.interval_seconds)}</section>
    <div class="grid cols2 mt">
      <section class="panel" id="by-code"><h2>${esc(t("by.code"))}</h2>${barList(findings.code, total, () => "", codeName, "data-code")}</section>
      <section class="panel"><h2>${esc(t("by.severity"))}</h2>${barList(findings.severity, total, n => n, n => t("severity." + n), "data-severity")}</section>
    </div>`;
  main.querySelectorAll("#readiness [data-readiness]").forEach(node => {
    if (node.dataset.readiness === "total" || node.dataset.readiness === "can_pay") return;
    node.classList.add("clickable");
    node.addEventListener("click", () => { location.hash = `#/problems?readiness=${node.dataset.readiness}`; });
  });
  main.querySelectorAll("#by-code [data-code]").forEach(node => {
    node.style.cursor = "pointer";
    node.addEventListener("click", () => { location.hash = `#/problems?code=${encodeURIComponent(node.dataset.code)}`; });
  });
  const nearDetails = main.querySelector("#usage-near-details");
  if (nearDetails) {
    const unfold = () => unfoldNearBudget(nearDetails).catch(error => {
      nearDetails.querySelector(".near-list").innerHTML = `<li class="muted">${esc(t("error", { error: error.message }))}</li>`;
    });
    if (nearDetails.open) unfold();
    nearDetails.addEventListener("toggle", () => {
      unfoldedNearBudget = nearDetails.open;
      if (nearDetails.open) unfold();
    });
  }
  main.querySelectorAll("#outages details.explained").forEach(node => {
    const unfold = () => unfoldOutage(node).catch(error => {
      node.querySelector(".explained-list").innerHTML = `<li class="muted">${esc(t("error", { error: error.message }))}</li>`;
    });
    if (node.open) unfold();
    node.addEventListener("toggle", () => {
      if (node.open) { unfoldedOutages.add(node.dataset.outage); unfold(); } else unfoldedOutages.delete(node.dataset.outage);
    });
  });
}

// ---------- problems ----------
const FILTERS = ["readiness", "region", "model", "carrier", "code", "party", "severity"];

function options(name, overview) {
  const facets = overview?.facets || {};
  switch (name) {
    case "region": case "model": case "carrier": return Object.keys(facets[name] || {}).sort().map(v => [v, v]);
    case "code": return Object.keys(overview?.findings?.code || {}).map(v => [v, codeName(v)]).sort((a, b) => a[1].localeCompare(b[1], lang));
    case "party": return PARTIES.map(v => [v, t("party." + v)]);
    case "severity": return ["critical", "warning"].map(v => [v, t("severity." + v)]);
    case "readiness": return READINESS.filter(v => v !== "can_pay").map(v => [v, t("readiness." + v)]);
  }
  return [];
}

async function viewProblems(main, current, fresh) {
  const params = current.params;
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const query = new URLSearchParams();
  for (const name of [...FILTERS, "q", "sort"]) if (params.get(name)) query.set(name, params.get(name));
  query.set("limit", PAGE_SIZE);
  query.set("offset", offset);
  const [page, overview] = await Promise.all([api(`/api/v1/problems?${query}`), fresh || !overviewCache ? api("/api/v1/overview") : Promise.resolve(overviewCache)]);
  overviewCache = overview;
  const select = name => {
    const value = params.get(name) || "";
    const known = options(name, overview);
    if (value && !known.some(([v]) => v === value)) known.unshift([value, value]);
    return `<label>${esc(t("filter." + name))}<select id="filter-${name}" data-filter="${name}"><option value="">${esc(t("filter.all"))}</option>${known.map(([v, label]) => `<option value="${esc(v)}" title="${esc(v)}" ${v === value ? "selected" : ""}>${esc(label)}</option>`).join("")}</select></label>`;
  };
  const sort = params.get("sort") || "readiness";
  const rows = (page.rows || []).map(row => `
    <tr class="clickable problem-row" data-terminal="${esc(row.terminal_id)}">
      <td><a href="#/terminal/${encodeURIComponent(row.terminal_id)}">${esc(row.terminal_id)}</a><div class="muted">${esc(row.labels?.merchant || "")}</div></td>
      <td>${badge(row.readiness, t("readiness." + row.readiness))}</td>
      <td>${esc(row.labels?.region || "")}</td><td>${esc(row.labels?.model || "")}</td><td>${esc(row.labels?.carrier || "")}</td>
      <td>${(row.findings || []).map(f => `<div class="finding" data-code="${esc(f.code)}" title="${esc(f.code)}">${badge(f.severity, t("severity." + f.severity))} ${esc(text(f.title))}${f.subject ? ` <span class="muted">(${esc(f.subject)})</span>` : ""} ${partyBadge(f.party)}${f.suppressed_by ? ` <span class="muted">${esc(t("terminal.suppressed"))}</span>` : ""} ${workflowBadges(f.workflow)}</div>`).join("")}</td>
      <td>${esc(ago(Math.min(...(row.findings || []).map(f => f.since))))}</td>
      <td>${esc(ago(row.last_seen))}</td>
    </tr>`).join("");
  const from = page.total ? offset + 1 : 0, to = Math.min(offset + PAGE_SIZE, page.total);
  const focused = document.activeElement?.id;
  main.innerHTML = `
    <h1>${esc(t("problems.title"))} <span class="muted" id="problem-total" data-total="${page.total}">· ${esc(t("problems.count", { total: fmtNumber(page.total) }))}</span></h1>
    <div class="filters panel">
      ${FILTERS.map(select).join("")}
      <label>${esc(t("filter.q"))}<input id="filter-q" data-filter="q" value="${esc(params.get("q") || "")}" maxlength="64" size="14"></label>
      <label>${esc(t("filter.sort"))}<select id="filter-sort" data-filter="sort">${["readiness", "since", "findings", "terminal"].map(s => `<option value="${s}" ${s === sort ? "selected" : ""}>${esc(t("sort." + s))}</option>`).join("")}</select></label>
      <button type="button" id="filter-clear">${esc(t("filter.clear"))}</button>
      <button type="button" id="probe-page" data-needs-role="operator" ${rows ? "" : "disabled"}>${esc(t("probe.page"))}</button>
      <span id="probe-page-message" class="muted">${probePageMessage ? esc(t(probePageMessage.key, probePageMessage.values)) : ""}</span>
    </div>
    <section class="panel">
      <table id="problems"><thead><tr>
        <th>${esc(t("col.terminal"))}</th><th>${esc(t("col.readiness"))}</th><th>${esc(t("col.region"))}</th><th>${esc(t("col.model"))}</th>
        <th>${esc(t("col.carrier"))}</th><th>${esc(t("col.findings"))}</th><th>${esc(t("col.since"))}</th><th>${esc(t("col.last_seen"))}</th>
      </tr></thead><tbody>${rows || `<tr><td colspan="8" class="muted">${esc(t("no.findings"))}</td></tr>`}</tbody></table>
      <div class="pager"><button type="button" id="page-prev" ${offset <= 0 ? "disabled" : ""}>${esc(t("page.prev"))}</button>
        <span class="muted">${esc(t("page.of", { from: fmtNumber(from), to: fmtNumber(to), total: fmtNumber(page.total) }))}</span>
        <button type="button" id="page-next" ${to >= page.total ? "disabled" : ""}>${esc(t("page.next"))}</button></div>
    </section>`;
  const go = changes => {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) { if (value === "" || value === null) next.delete(name); else next.set(name, value); }
    if (!("offset" in changes)) next.delete("offset");
    location.hash = `#/problems?${next}`;
  };
  main.querySelectorAll("select[data-filter]").forEach(node => node.addEventListener("change", () => go({ [node.dataset.filter]: node.value })));
  const search = main.querySelector("#filter-q");
  search.addEventListener("change", () => go({ q: search.value.trim() }));
  if (focused === "filter-q") { search.focus(); search.setSelectionRange(search.value.length, search.value.length); }
  main.querySelector("#filter-clear").addEventListener("click", () => { location.hash = "#/problems"; });
  main.querySelector("#probe-page").addEventListener("click", () => probePage((page.rows || []).map(row => row.terminal_id)));
  main.querySelector("#page-prev").addEventListener("click", () => go({ offset: Math.max(0, offset - PAGE_SIZE) }));
  main.querySelector("#page-next").addEventListener("click", () => go({ offset: offset + PAGE_SIZE }));
  main.querySelectorAll("tr.problem-row").forEach(row => row.addEventListener("click", event => {
    if (event.target.closest("a")) return;
    location.hash = `#/terminal/${encodeURIComponent(row.dataset.terminal)}`;
  }));
}

// ---------- terminal ----------
function latencyChart(points) {
  if (!points || points.length < 2) return `<p class="muted">${esc(t("terminal.no_latency"))}</p>`;
  const width = 600, height = 160, left = 44, bottom = 20, top = 8;
  const max = Math.max(1, ...points.map(p => p[1]));
  const first = points[0][0], last = points[points.length - 1][0], span = Math.max(1, last - first);
  const x = at => left + (width - left - 6) * (at - first) / span;
  const y = v => top + (height - top - bottom) * (1 - v / max);
  // Sub-10 ms latencies (a LAN, loopback) need a decimal, or the ticks read "1, 1, 0".
  const tick = v => (max < 10 ? v.toFixed(1) : String(Math.round(v)));
  const grid = [0, 0.5, 1].map(f => `<text x="${left - 6}" y="${y(max * f) + 4}" text-anchor="end">${tick(max * f)}</text><line class="axis" x1="${left}" x2="${width}" y1="${y(max * f)}" y2="${y(max * f)}"/>`).join("");
  const line = `<polyline fill="none" stroke="var(--accent)" stroke-width="2.5" points="${points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}"/>`;
  const dots = points.map(p => `<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3" fill="var(--accent)"><title>${esc(fmtTime(p[0]))}: ${p[1].toFixed(1)} ms</title></circle>`).join("");
  const times = [[first, "start"], [last, "end"]].map(([at, anchor]) => `<text x="${x(at)}" y="${height - 3}" text-anchor="${anchor}">${esc(fmtClock(new Date(at * 1000)))}</text>`).join("");
  return `<svg class="chart chart-small" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none">${grid}${line}${dots}${times}</svg>`;
}

// A span of time in its two largest units: `2 h 5 min`.
function fmtDuration(seconds) {
  let rest = Math.max(0, Math.round(Number(seconds) || 0));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count || (unit === "s" && !parts.length)) parts.push(t("duration." + unit, { n: count }));
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

// A finding on the terminal's timeline: an open one in its severity's colour, a closed one
// muted, its title struck through, with when it closed and how long it lasted.
function findingItem(f, open) {
  const classes = open ? [f.severity, "open"].join(" ") : "closed";
  const lasted = (Date.parse(f.closed_at) - Date.parse(f.since)) / 1000;
  const state = open ? (f.suppressed_by ? t("terminal.suppressed") : t("terminal.open"))
    : t(Number.isFinite(lasted) ? "terminal.closed_after" : "terminal.closed", { time: fmtTime(f.closed_at), duration: fmtDuration(lasted) });
  const evidence = (f.evidence || []).map(e => `${esc(e.name)} = ${esc(e.value)}${e.threshold ? ` (${esc(e.threshold)})` : ""}`).join(" · ");
  return `<li class="${esc(classes)}" data-code="${esc(f.code)}" data-finding="${esc(f.id)}">
    <div class="head">${open ? badge(f.severity, t("severity." + f.severity)) : badge("closed", t("terminal.closed_badge"))}<span class="title">${esc(text(f.title))}</span>
      ${f.subject ? `<span class="muted">${esc(f.subject)}</span>` : ""}${partyBadge(f.party)}<code class="muted">${esc(f.code)}</code></div>
    <div class="muted">${esc(fmtTime(f.since))} → ${esc(state)}${evidence ? " · " + evidence : ""}</div>
    <div class="remedy"><strong>${esc(t("terminal.remediation"))}:</strong> ${esc(text(f.remediation))}</div>
  </li>`;
}

function deviceView(device) {
  if (!device) return `<p class="muted">${esc(t("terminal.no_device"))}</p>`;
  const rows = [];
  const pct = v => `${v.toFixed(1)} %`;
  if (device.cpu_percent != null) rows.push(["device.cpu", pct(device.cpu_percent)]);
  if (device.memory_available_percent != null) rows.push(["device.memory", pct(device.memory_available_percent)]);
  if (device.disk_free_percent != null) rows.push(["device.disk", pct(device.disk_free_percent)]);
  if (device.temperature_celsius != null) rows.push(["device.temperature", `${device.temperature_celsius.toFixed(1)} °C`]);
  if (device.battery_percent != null) rows.push(["device.battery", pct(device.battery_percent) + (device.battery_charging ? ` (${t("device.charging")})` : "")]);
  if (device.uptime_seconds != null) rows.push(["device.uptime", `${(device.uptime_seconds / 3600).toFixed(1)} h`]);
  if (device.clock_offset_ms != null) rows.push(["device.clock", `${device.clock_offset_ms.toFixed(0)} ms`]);
  const list = (items, good, bad) => items.map(p => badge(p.ok ? "ok" : "critical", `${p.name}: ${p.ok ? t(good) : t(bad)}`)).join(" ");
  if (device.peripherals?.length) rows.push(["device.peripherals", null, list(device.peripherals, "present", "missing")]);
  if (device.processes?.length) rows.push(["device.processes", null, list(device.processes, "running", "stopped")]);
  return `<dl class="kv">${rows.map(([key, value, html]) => `<dt>${esc(t(key))}</dt><dd>${html ?? esc(value)}</dd>`).join("")}</dl>`;
}

async function viewTerminal(main, current) {
  const id = current.id;
  let terminal, versions;
  try {
    [terminal, versions] = await Promise.all([
      api(`/api/v1/terminals/${encodeURIComponent(id)}`),
      api(`/api/v1/terminals/${encodeURIComponent(id)}/versions`),
    ]);
  } catch (error) {
    if (error.status === 404) { main.innerHTML = `<p class="notice">${esc(t("terminal.unknown", { id }))}</p>`; return; }
    throw error;
  }
  const labels = terminal.labels || {};
  const labelRows = [["col.region", labels.region], ["col.model", labels.model], ["col.carrier", labels.carrier], ["terminal.merchant", labels.merchant], ["terminal.gateway", labels.gateway], ["terminal.resolver", labels.resolver]]
    .filter(([, v]) => v).map(([k, v]) => `<dt>${esc(t(k))}</dt><dd>${esc(v)}</dd>`).join("")
    + Object.entries(labels.extra || {}).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  const targets = (terminal.targets || []).map(target => `
    <div class="target" data-target="${esc(target.target)}">
      <h3>${esc(target.target)} <span class="muted">${esc(target.address)}</span> ${badge(target.status === "ok" ? "ok" : "critical", target.status === "ok" ? t("rung.ok") : `${t("rung.failed")}: ${target.failed_stage}${target.error ? " / " + target.error : ""}`)}</h3>
      <div class="ladder">${(target.rungs || []).map(r => `<span class="rung ${esc(r.status)}" title="${esc(t("rung." + r.status))}">${esc(r.stage.toUpperCase())}</span>`).join('<span class="arrow">→</span>')}</div>
      <div class="muted">${esc(t("terminal.latency"))}</div>${latencyChart(target.latency_ms)}
    </div>`).join("");
  const versionRows = (versions.components || []).map(c => {
    const rules = (c.rules || []).map(r => [r.model ? `${r.model}: ` : "", t("policy.minimum", { v: r.minimum }), r.latest ? ", " + t("policy.latest", { v: r.latest }) : ""].join("")).join("; ");
    return `<tr data-component="${esc(c.component)}"><td>${esc(c.component)}</td><td><code>${esc(c.version)}</code></td><td>${esc(rules || t("policy.none"))}</td><td>${badge(c.compliance, t("compliance." + c.compliance))}</td></tr>`;
  }).join("");
  const open = (terminal.open_findings || []).slice().sort((a, b) => Date.parse(b.since) - Date.parse(a.since));
  // The headline: can it take payments, and what stops it (the critical findings) or
  // threatens it (the others).
  const stopping = open.filter(f => f.severity === "critical");
  const why = (terminal.readiness === "cannot_pay" ? stopping : terminal.readiness === "can_pay" ? [] : open)
    .map(f => `<li data-code="${esc(f.code)}">${esc(text(f.title))}${f.subject ? ` <span class="muted">(${esc(f.subject)})</span>` : ""} ${partyBadge(f.party)}</li>`).join("");
  const headline = `<div class="panel headline ${esc(terminal.readiness)}" id="terminal-readiness" data-readiness="${esc(terminal.readiness)}">
      <div class="value">${esc(t("readiness." + terminal.readiness))}</div>
      ${why ? `<div class="muted">${esc(t(terminal.readiness === "cannot_pay" ? "readiness.stops" : "readiness.why"))}:</div><ul>${why}</ul>` : ""}
    </div>`;
  const history = (terminal.findings_history || []).slice().sort((a, b) => Date.parse(b.since) - Date.parse(a.since));
  main.innerHTML = `
    <p><a href="#/problems">${esc(t("terminal.back"))}</a></p>
    <h1 id="terminal-title">${esc(t("terminal.title", { id: terminal.terminal_id }))} ${badge(terminal.readiness, t("readiness." + terminal.readiness))}</h1>
    ${headline}
    ${controlPanel(terminal)}
    <div class="grid cols3 mt">
      <section class="panel"><h2>${esc(t("terminal.identity"))}</h2><dl class="kv">
        <dt>${esc(t("terminal.agent"))}</dt><dd>${esc(terminal.agent_version)}</dd>
        <dt>${esc(t("terminal.first_seen"))}</dt><dd>${esc(fmtTime(terminal.first_seen))}</dd>
        <dt>${esc(t("terminal.last_seen"))}</dt><dd>${esc(fmtTime(terminal.last_seen))} (${esc(ago(terminal.last_seen))})</dd>
        <dt>${esc(t("terminal.observed_at"))}</dt><dd>${esc(fmtTime(terminal.observed_at))}</dd>
        ${terminal.data_usage ? `<dt>${esc(t("terminal.data_usage"))}</dt><dd id="data-usage" data-near="${terminal.data_usage.near_budget}">${usageLine(terminal.data_usage)}</dd>` : ""}
        ${terminal.agent_instance ? `<dt>${esc(t("terminal.instance"))}</dt><dd id="agent-instance"><code>${esc(terminal.agent_instance)}</code><div class="muted">${esc(terminal.sequence_resets
          ? t("terminal.resets", { count: terminal.sequence_resets, time: fmtTime(terminal.last_sequence_reset_at) })
          : t("terminal.no_resets", { sequence: terminal.sequence }))}</div></dd>` : ""}
      </dl><h2 class="mt">${esc(t("terminal.labels"))}</h2><dl class="kv">${labelRows}</dl></section>
      <section class="panel"><h2>${esc(t("terminal.versions"))}</h2><table id="versions"><thead><tr><th>${esc(t("col.component"))}</th><th>${esc(t("col.version"))}</th><th>${esc(t("col.policy"))}</th><th>${esc(t("col.compliance"))}</th></tr></thead><tbody>${versionRows}</tbody></table></section>
      <section class="panel"><h2>${esc(t("terminal.device"))}</h2>${deviceView(terminal.device)}</section>
    </div>
    <section class="panel mt" id="path"><h2>${esc(t("terminal.path"))}</h2><div class="grid cols2">${targets}</div></section>
    <section class="panel mt"><h2>${esc(t("terminal.findings"))}</h2>
      <ul class="timeline" id="timeline">${open.map(f => findingItem(f, true)).join("")}${history.map(f => findingItem(f, false)).join("")}</ul>
      ${open.length + history.length ? "" : `<p class="muted">${esc(t("no.findings"))}</p>`}
    </section>`;
  main.querySelector("#probe-now")?.addEventListener("click", () => probeNow(terminal.terminal_id));
}

// ---------- fleet control ----------
// The message under the probe button (a string key and its values), kept across refreshes
// until the next request.
let probeMessage = null;
// Profiles whose settings are unfolded on the config page: kept across refreshes.
const unfoldedProfiles = new Set();

// A terminal's settings (running, due, refused) and its latest probe request, with the button.
function controlPanel(terminal) {
  const config = terminal.config;
  const probe = terminal.probe;
  let rows = "";
  if (config) {
    rows += `<dt>${esc(t("control.applied"))}</dt><dd id="config-applied">${config.applied ? `<code>${esc(config.applied)}</code>` : esc(t("control.local"))}</dd>`;
    const refused = config.rejected;
    if (config.effective && config.effective !== config.applied && refused?.version !== config.effective) {
      rows += `<dt>${esc(t("control.effective"))}</dt><dd id="config-effective"><code>${esc(config.effective)}</code> ${badge("warning", t("control.pending"))}</dd>`;
    }
    if (refused) {
      rows += `<dt>${esc(t("control.rejected"))}</dt><dd id="config-rejected" class="error"><code>${esc(refused.version)}</code>: ${esc(refused.reason)}</dd>`;
    }
  }
  const probeText = probe
    ? `${esc(t("probe.requested", { by: probe.requested_by, time: fmtTime(probe.requested_at) }))} — ${esc(probe.answered_at ? t("probe.answered", { time: fmtTime(probe.answered_at) }) : t("probe.waiting"))}`
    : esc(t("probe.none"));
  return `<section class="panel mt" id="control"><h2>${esc(t("control.title"))}</h2>
    ${config ? `<dl class="kv">${rows}</dl>` : `<p class="muted">${esc(t("control.unknown"))}</p>`}
    <p id="probe-state" data-answered="${probe?.answered_at ? "true" : "false"}">${probeText}</p>
    <p><button type="button" id="probe-now" data-needs-role="operator">${esc(t("probe.now"))}</button> <span id="probe-message" class="muted">${probeMessage ? esc(t(probeMessage.key, probeMessage.values)) : ""}</span></p>
  </section>`;
}

// A request that changes something. Signed in (session.js sets posmonSession): with the
// session's cookie and its CSRF token. Otherwise the admin token is asked once per tab
// (sessionStorage) and asked again if refused. Returns the response, or null when no token was
// given.
async function adminRequest(method, path, body) {
  if (window.posmonSession?.signed_in) {
    return fetch(path, {
      method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": window.posmonSession.csrf_token },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
  for (let attempt = 0; attempt < 2; attempt += 1) {
    let token = sessionStorage.getItem("posmon.admin");
    if (!token) {
      token = window.prompt(t("admin.prompt")) || "";
      if (!token) return null;
      sessionStorage.setItem("posmon.admin", token);
    }
    const response = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "Authorization": `Bearer ${token}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status !== 401 && response.status !== 403) return response;
    sessionStorage.removeItem("posmon.admin");
    probeMessage = { key: "admin.refused" };
  }
  return null;
}

// The message beside the problem list's probe button, kept across refreshes.
let probePageMessage = null;

// Probe now, for the terminals of the problem list's page (at most a page: the API bounds a
// request to control.max_probe_batch).
async function probePage(terminals) {
  const response = await adminRequest("POST", "/api/v1/probe", { terminals });
  if (response) {
    const answer = response.ok ? await response.json() : null;
    probePageMessage = answer ? { key: "probe.page.sent", values: { count: answer.requested } } : { key: "error", values: { error: `${response.status} ${response.statusText}` } };
  }
  refresh();
}

async function probeNow(terminalId) {
  const response = await adminRequest("POST", `/api/v1/terminals/${encodeURIComponent(terminalId)}/probe`);
  if (response) {
    probeMessage = response.ok ? { key: "probe.sent" } : { key: "error", values: { error: `${response.status} ${response.statusText}` } };
  }
  refresh();
}

function selectorText(selector) {
  const parts = ["region", "carrier", "model", "merchant", "terminal"].filter(k => selector?.[k]).map(k => `${k}=${selector[k]}`);
  for (const [key, value] of Object.entries(selector?.labels || {})) parts.push(`${key}=${value}`);
  return parts.length ? parts.join(" · ") : t("selector.all");
}
function rolloutText(rollout) {
  if (!rollout) return t("rollout.all");
  const parts = [rollout.percent == null || rollout.percent >= 100 ? t("rollout.all") : t("rollout.percent", { percent: rollout.percent })];
  if (rollout.label) parts.push(t("rollout.label", { key: rollout.label.key, value: rollout.label.value }));
  return parts.join(" + ");
}
function listOf(data, key) { return Array.isArray(data) ? data : (data?.[key] || []); }

async function viewConfig(main) {
  const [versions, profiles, history] = await Promise.all([
    api("/api/v1/config/versions"), api("/api/v1/config/profiles"), api("/api/v1/config/history?limit=50"),
  ]);
  const versionRows = listOf(versions, "versions").map(v => `<tr data-version="${esc(v.version)}"><td><code>${esc(v.version)}</code></td><td class="num">${fmtNumber(v.assigned)}</td><td class="num">${fmtNumber(v.running)}</td><td class="num">${v.rejected ? badge("critical", fmtNumber(v.rejected)) : "0"}</td></tr>`).join("");
  const profileRows = listOf(profiles, "profiles").map(p => `<tr data-profile="${esc(p.name)}"><td><strong>${esc(p.name)}</strong></td><td>${esc(selectorText(p.selector))}</td>
    <td class="num">${esc(p.revision)}</td><td>${esc(rolloutText(p.rollout))}</td><td>${esc(fmtTime(p.updated_at))}</td><td>${esc(p.updated_by)}</td><td>${esc(p.comment || "")}</td>
    <td><details data-settings="${esc(p.name)}"${unfoldedProfiles.has(p.name) ? " open" : ""}><summary>${esc(t("config.settings"))}</summary><pre>${esc(JSON.stringify(p.settings, null, 2))}</pre></details></td></tr>`).join("");
  const historyRows = listOf(history, "history").map(h => `<tr><td>${esc(fmtTime(h.at))}</td><td>${esc(h.profile)}</td><td class="num">${esc(h.revision)}</td><td>${esc(h.action)}</td><td>${esc(h.by)}</td><td>${esc(h.comment || "")}</td></tr>`).join("");
  const tile = (id, label, value, kind) => `<div class="panel tile ${kind}" id="${id}"><div class="label">${esc(label)}</div><div class="value">${fmtNumber(value)}</div></div>`;
  main.innerHTML = `
    <h1>${esc(t("config.title"))}</h1>
    <div class="grid tiles">${tile("config-pending", t("config.pending"), versions.pending || 0, versions.pending ? "warning" : "ok")}${tile("config-unknown", t("config.unknown"), versions.unknown || 0, "total")}</div>
    <section class="panel mt"><h2>${esc(t("config.versions"))}</h2><table id="config-versions"><thead><tr><th>${esc(t("col.version"))}</th><th class="num">${esc(t("col.assigned"))}</th><th class="num">${esc(t("col.running"))}</th><th class="num">${esc(t("col.rejected"))}</th></tr></thead><tbody>${versionRows}</tbody></table></section>
    <section class="panel mt"><h2>${esc(t("config.profiles"))}</h2>${profileRows ? `<table id="config-profiles"><thead><tr><th>${esc(t("col.profile"))}</th><th>${esc(t("col.selector"))}</th><th class="num">${esc(t("col.revision"))}</th><th>${esc(t("col.rollout"))}</th><th>${esc(t("col.updated"))}</th><th>${esc(t("col.by"))}</th><th>${esc(t("col.comment"))}</th><th></th></tr></thead><tbody>${profileRows}</tbody></table>` : `<p class="muted">${esc(t("config.no_profiles"))}</p>`}</section>
    <section class="panel mt"><h2>${esc(t("config.history"))}</h2>${historyRows ? `<table id="config-history"><thead><tr><th>${esc(t("col.time"))}</th><th>${esc(t("col.profile"))}</th><th class="num">${esc(t("col.revision"))}</th><th>${esc(t("col.action"))}</th><th>${esc(t("col.by"))}</th><th>${esc(t("col.comment"))}</th></tr></thead><tbody>${historyRows}</tbody></table>` : `<p class="muted">${esc(t("config.no_history"))}</p>`}</section>`;
  main.querySelectorAll("details[data-settings]").forEach(node => node.addEventListener("toggle", () => {
    if (node.open) unfoldedProfiles.add(node.dataset.settings); else unfoldedProfiles.delete(node.dataset.settings);
  }));
}

// ---------- versions ----------
async function viewVersions(main) {
  const data = await api("/api/v1/versions");
  const rows = (data.rows || []).slice().sort((a, b) => (b.outdated / b.terminals) - (a.outdated / a.terminals) || a.model.localeCompare(b.model));
  const body = rows.map(r => {
    const out = 100 * r.outdated / Math.max(1, r.terminals), behind = 100 * r.behind / Math.max(1, r.terminals);
    return `<tr data-model="${esc(r.model)}" data-component="${esc(r.component)}"><td>${esc(r.model)}</td><td>${esc(r.component)}</td>
      <td class="num">${fmtNumber(r.terminals)}</td><td class="num">${fmtNumber(r.behind)}</td><td class="num">${fmtNumber(r.outdated)}</td>
      <td><div class="share-bar" title="${out.toFixed(1)} % / ${behind.toFixed(1)} %"><span class="critical" data-width="${out}"></span><span class="warning" data-width="${behind}"></span></div></td>
      <td class="num">${r.no_rule && r.no_rule >= r.terminals ? badge("no_rule", t("compliance.no_rule")) : `<strong>${out.toFixed(1)} %</strong>`}</td></tr>`;
  }).join("");
  const policy = (data.policy || []).map(r => `<tr><td>${esc(r.component)}</td><td>${esc(r.model || t("filter.all"))}</td><td><code>${esc(r.minimum)}</code></td><td><code>${esc(r.latest || "")}</code></td></tr>`).join("");
  main.innerHTML = `
    <h1>${esc(t("versions.title"))}</h1>
    <section class="panel">${rows.length ? `<table id="compliance"><thead><tr><th>${esc(t("col.model"))}</th><th>${esc(t("col.component"))}</th><th class="num">${esc(t("col.terminals"))}</th><th class="num">${esc(t("col.behind"))}</th><th class="num">${esc(t("col.outdated"))}</th><th></th><th class="num">${esc(t("versions.share"))}</th></tr></thead><tbody>${body}</tbody></table>` : `<p class="muted">${esc(t("versions.empty"))}</p>`}</section>
    <section class="panel mt"><h2>${esc(t("versions.policy"))}</h2>${policy ? `<table><thead><tr><th>${esc(t("col.component"))}</th><th>${esc(t("col.model"))}</th><th>${esc(t("policy.minimum", { v: "" }))}</th><th>${esc(t("policy.latest", { v: "" }))}</th></tr></thead><tbody>${policy}</tbody></table>` : `<p class="muted">${esc(t("versions.no_policy"))}</p>`}</section>`;
}

// ---------- alerts ----------
async function viewAlerts(main) {
  let data;
  try {
    data = await api("/api/v1/alerts/notifications");
  } catch (error) {
    if (error.status === 404 || error.status === 501 || error.status === 503) {
      main.innerHTML = `<h1>${esc(t("alerts.title"))}</h1><p class="notice" id="alerts-unavailable">${esc(t("alerts.unavailable"))}</p>`;
      return;
    }
    throw error;
  }
  const list = Array.isArray(data) ? data : (data.notifications || []);
  // No receiver: say plainly that nothing will be sent, and where to configure one.
  const noReceiver = Array.isArray(data.receivers) && data.receivers.length === 0
    ? `<div class="notice warning" id="alerts-no-receiver"><strong>${esc(t("alerts.no_receiver"))}</strong><p>${esc(t("alerts.no_receiver.how"))}</p><pre>[alerts]
default_receiver = "operations"

[[alerts.receivers]]
name = "operations"
kind = "webhook"
url = "https://ops.example/posmon"
secret = { file = "ops-webhook-secret" }</pre></div>` : "";
  const pick = (n, ...names) => names.map(name => n[name]).find(v => v !== undefined && v !== null);
  const rows = list.map(n => {
    const status = String(pick(n, "status", "state") ?? "");
    const kind = /deliver|sent|ok|success/i.test(status) ? "ok" : /fail|error|dead/i.test(status) ? "critical" : "warning";
    const terminals = (n.terminals || []).join(", ");
    return `<tr><td>${esc(fmtTime(pick(n, "updated_at", "last_attempt_at", "created_at", "at")))}</td><td>${esc(pick(n, "receiver", "receiver_name"))}</td>
      <td>${(n.codes || []).map(codeLabel).join(", ")} <span class="muted">${esc(terminals)}</span></td>
      <td>${badge(kind, status)}</td><td class="num">${esc(pick(n, "attempts") ?? "")}</td><td class="error">${esc(pick(n, "last_error", "error") ?? "")}</td></tr>`;
  }).join("");
  main.innerHTML = `<h1>${esc(t("alerts.title"))}</h1>${noReceiver}<section class="panel${noReceiver ? " mt" : ""}">${rows ? `<table id="notifications"><thead><tr><th>${esc(t("col.time"))}</th><th>${esc(t("col.receiver"))}</th><th>${esc(t("col.finding"))}</th><th>${esc(t("col.delivery"))}</th><th class="num">${esc(t("col.attempts"))}</th><th>${esc(t("col.last_error"))}</th></tr></thead><tbody>${rows}</tbody></table>` : `<p class="muted">${esc(t("alerts.empty"))}</p>`}</section>`;
}

document.getElementById("lang-toggle").addEventListener("click", () => {
  lang = lang === "en" ? "zh-CN" : "en";
  localStorage.setItem("posmon.lang", lang);
  applyStaticText();
  refresh();
});
window.addEventListener("hashchange", () => {
  kioskFromUrl();
  // Only a language named in the new hash: the toggle's choice outlives the page's query string.
  if (new URLSearchParams(location.hash.split("?")[1] || "").has("lang") && langFromUrl(true)) applyStaticText();
  refresh();
});
// Bar widths come as data-width (a percentage) and are set through the CSSOM: the page's
// Content-Security-Policy refuses inline style attributes.
function applyWidths(root) {
  root.querySelectorAll("[data-width]").forEach(node => {
    const width = Math.min(100, Math.max(0, Number(node.dataset.width) || 0));
    node.style.width = `${width}%`;
    node.removeAttribute("data-width");
  });
}
const mainNode = document.getElementById("main");
new MutationObserver(() => applyWidths(mainNode)).observe(mainNode, { childList: true, subtree: true });
registerView("overview", viewOverview);
registerView("problems", viewProblems);
registerView("terminal", viewTerminal, "problems");
registerView("versions", viewVersions);
registerView("config", viewConfig);
registerView("alerts", viewAlerts);
// Every script of the page has run by DOMContentLoaded: their views and texts are in.
document.addEventListener("DOMContentLoaded", () => { applyStaticText(); refresh(); });
