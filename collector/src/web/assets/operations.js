// posmon dashboard: the operations team's daily work. #/terminals searches the whole fleet;
// the terminal page gets the problem workflow (acknowledge, assign, comment, close by hand)
// and its activity; #/maintenance creates maintenance windows (one-off or recurring), shows
// what each hides and ends them early; #/activity is the audit log. Loaded after app.js, whose
// helpers (t, esc, api, badge, fmtTime, ago, adminRequest, refresh…) it uses.
"use strict";

addStrings({
  "en": {
    "nav.terminals": "Terminals", "nav.maintenance": "Maintenance", "nav.activity": "Activity",
    "terminals.title": "Terminals", "terminals.count": "{total} terminals", "terminals.q": "Search: id, merchant, serial, any label",
    "terminals.none": "No terminal matches.", "col.merchant": "Merchant", "col.serial": "Serial", "col.versions": "Versions",
    "col.open": "Open findings", "terminals.acked": "{count} acknowledged",
    "workflow.acked": "Acknowledged by {by} · {time}", "workflow.assigned": "Assigned to {who}", "workflow.comments": "Comments: {count}",
    "workflow.acknowledge": "Acknowledge", "workflow.unacknowledge": "Unacknowledge", "workflow.assign": "Assign",
    "workflow.comment": "Comment", "workflow.close": "Close", "workflow.save": "Save", "workflow.cancel": "Cancel",
    "workflow.person": "Person", "workflow.party": "or party", "workflow.nobody": "Nobody",
    "workflow.comment_text": "Comment", "workflow.close_confirm": "Close this finding by hand? If the problem persists, a new finding opens.",
    "workflow.done": "Recorded.", "workflow.refused": "Refused: {error}",
    "activity.title": "Activity", "activity.terminal": "Activity on this terminal", "activity.none": "No action recorded yet.",
    "activity.older": "Older ›", "activity.newest": "‹ Newest",
    "action.acknowledge": "acknowledged", "action.unacknowledge": "took back the acknowledgement of", "action.assign": "assigned",
    "action.unassign": "unassigned", "action.comment": "commented on", "action.close": "closed by hand",
    "action.maintenance.create": "created maintenance window", "action.maintenance.end": "ended maintenance window early",
    "maintenance.title": "Maintenance windows", "maintenance.new": "New maintenance window",
    "maintenance.help": "While a window holds, notifications of the findings it matches are held; findings are still recorded, and those still open are sent when it ends.",
    "maintenance.kind": "Repeats", "maintenance.once": "Once", "maintenance.daily": "Every day", "maintenance.weekly": "Every week on",
    "maintenance.start": "Starts (your time)", "maintenance.hours": "Lasts (hours)", "maintenance.until": "Repeats until",
    "maintenance.terminal": "Terminal ids (comma-separated)", "maintenance.comment": "Reason",
    "maintenance.create": "Create", "maintenance.created": "Maintenance window {id} created.",
    "maintenance.none": "No maintenance window.", "maintenance.end": "End now",
    "maintenance.state.active": "Holding now", "maintenance.state.pending": "Not begun", "maintenance.state.scheduled": "Between windows",
    "maintenance.state.expired": "Over", "maintenance.matches": "Matches {count} open findings", "maintenance.what": "What",
    "maintenance.when": "When", "maintenance.by": "By", "maintenance.next": "next {time}", "maintenance.until_time": "until {time}",
    "maintenance.every_day": "every day at {time} for {hours} h", "maintenance.every_week": "every {days} at {time} for {hours} h",
    "maintenance.need_match": "Choose at least one region, carrier, model, merchant, party or terminal.",
    "maintenance.need_start": "Give the start time.",
    "day.mon": "Mon", "day.tue": "Tue", "day.wed": "Wed", "day.thu": "Thu", "day.fri": "Fri", "day.sat": "Sat", "day.sun": "Sun",
  },
  "zh-CN": {
    "nav.terminals": "终端", "nav.maintenance": "维护窗口", "nav.activity": "操作记录",
    "terminals.title": "终端", "terminals.count": "共 {total} 台终端", "terminals.q": "搜索：编号、商户、序列号、任意标签",
    "terminals.none": "没有匹配的终端。", "col.merchant": "商户", "col.serial": "序列号", "col.versions": "版本",
    "col.open": "未关闭问题", "terminals.acked": "{count} 项已确认",
    "workflow.acked": "已由 {by} 确认 · {time}", "workflow.assigned": "处理人：{who}", "workflow.comments": "{count} 条备注",
    "workflow.acknowledge": "确认", "workflow.unacknowledge": "取消确认", "workflow.assign": "指派",
    "workflow.comment": "备注", "workflow.close": "手动关闭", "workflow.save": "保存", "workflow.cancel": "取消",
    "workflow.person": "人员", "workflow.party": "或责任方", "workflow.nobody": "无",
    "workflow.comment_text": "备注", "workflow.close_confirm": "手动关闭此问题？如果问题仍然存在，将产生新的问题。",
    "workflow.done": "已记录。", "workflow.refused": "被拒绝：{error}",
    "activity.title": "操作记录", "activity.terminal": "此终端的操作记录", "activity.none": "尚无操作记录。",
    "activity.older": "更早 ›", "activity.newest": "‹ 最新",
    "action.acknowledge": "确认了", "action.unacknowledge": "取消确认", "action.assign": "指派了",
    "action.unassign": "取消指派", "action.comment": "备注了", "action.close": "手动关闭了",
    "action.maintenance.create": "创建了维护窗口", "action.maintenance.end": "提前结束了维护窗口",
    "maintenance.title": "维护窗口", "maintenance.new": "新建维护窗口",
    "maintenance.help": "窗口生效期间，匹配问题的通知暂缓发送；问题照常记录，窗口结束时仍未关闭的问题会发出通知。",
    "maintenance.kind": "重复", "maintenance.once": "一次", "maintenance.daily": "每天", "maintenance.weekly": "每周",
    "maintenance.start": "开始时间（本地）", "maintenance.hours": "持续（小时）", "maintenance.until": "重复至",
    "maintenance.terminal": "终端编号（逗号分隔）", "maintenance.comment": "原因",
    "maintenance.create": "创建", "maintenance.created": "已创建维护窗口 {id}。",
    "maintenance.none": "没有维护窗口。", "maintenance.end": "立即结束",
    "maintenance.state.active": "生效中", "maintenance.state.pending": "未开始", "maintenance.state.scheduled": "等待下次窗口",
    "maintenance.state.expired": "已结束", "maintenance.matches": "匹配 {count} 个未关闭问题", "maintenance.what": "范围",
    "maintenance.when": "时间", "maintenance.by": "创建人", "maintenance.next": "下次 {time}", "maintenance.until_time": "至 {time}",
    "maintenance.every_day": "每天 {time} 起 {hours} 小时", "maintenance.every_week": "每周{days} {time} 起 {hours} 小时",
    "maintenance.need_match": "请至少选择一个地区、运营商、型号、商户、责任方或终端。",
    "maintenance.need_start": "请填写开始时间。",
    "day.mon": "一", "day.tue": "二", "day.wed": "三", "day.thu": "四", "day.fri": "五", "day.sat": "六", "day.sun": "日",
  },
});

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function assigneeText(assignee) {
  if (!assignee) return "";
  return assignee.person ?? t("party." + assignee.party);
}

// The workflow state of an open finding as badges: who acknowledged it, who it is assigned to.
function workflowBadges(workflow) {
  if (!workflow) return "";
  const parts = [];
  if (workflow.acknowledged_by) parts.push(`<span class="badge acked" title="${esc(fmtTime(workflow.acknowledged_at))}">✓ ${esc(t("workflow.acked", { by: workflow.acknowledged_by, time: fmtTime(workflow.acknowledged_at) }))}</span>`);
  if (workflow.assignee) parts.push(`<span class="badge assignee">${esc(t("workflow.assigned", { who: assigneeText(workflow.assignee) }))}</span>`);
  return parts.join(" ");
}

// ---------- terminals ----------
// The cursors of the pages before the current one, per search: "Previous" goes back one.
const terminalPages = [];
let terminalSearchKey = null;

async function viewTerminals(main, current) {
  const params = current.params;
  const query = new URLSearchParams();
  for (const name of ["q", "region", "carrier", "model", "merchant", "readiness", "label"]) if (params.get(name)) query.set(name, params.get(name));
  const searchKey = query.toString();
  if (searchKey !== terminalSearchKey) { terminalPages.length = 0; terminalSearchKey = searchKey; }
  const after = params.get("after") || "";
  query.set("limit", PAGE_SIZE);
  if (after) query.set("after", after);
  const [page, overview] = await Promise.all([api(`/api/v1/terminals?${query}`), overviewCache ? Promise.resolve(overviewCache) : api("/api/v1/overview")]);
  overviewCache = overview;
  const facets = overview?.facets || {};
  const select = (name, values) => {
    const value = params.get(name) || "";
    return `<label>${esc(t("filter." + name))}<select data-filter="${name}" id="terminals-${name}"><option value="">${esc(t("filter.all"))}</option>${values.map(([v, label]) => `<option value="${esc(v)}" ${v === value ? "selected" : ""}>${esc(label)}</option>`).join("")}</select></label>`;
  };
  const facet = name => Object.keys(facets[name] || {}).sort().map(v => [v, v]);
  const rows = (page.terminals || []).map(terminal => {
    const labels = terminal.labels || {};
    const versions = Object.entries(terminal.versions || {}).map(([component, version]) => `<div><span class="muted">${esc(component)}</span> <code>${esc(version)}</code></div>`).join("");
    return `<tr class="clickable terminal-row" data-terminal="${esc(terminal.terminal_id)}">
      <td><a href="#/terminal/${encodeURIComponent(terminal.terminal_id)}">${esc(terminal.terminal_id)}</a></td>
      <td>${badge(terminal.readiness, t("readiness." + terminal.readiness))}</td>
      <td>${esc(labels.merchant || "")}</td><td>${esc(labels.extra?.serial || "")}</td>
      <td>${esc(labels.region || "")}</td><td>${esc(labels.carrier || "")}</td><td>${esc(labels.model || "")}</td>
      <td>${versions}</td>
      <td class="num">${fmtNumber(terminal.open_findings)}${terminal.acknowledged_findings ? `<div class="muted">${esc(t("terminals.acked", { count: terminal.acknowledged_findings }))}</div>` : ""}</td>
      <td title="${esc(fmtTime(terminal.last_seen))}">${esc(ago(terminal.last_seen))}</td>
    </tr>`;
  }).join("");
  const focused = document.activeElement?.id;
  main.innerHTML = `
    <h1>${esc(t("terminals.title"))} <span class="muted" id="terminals-total" data-total="${page.total}">· ${esc(t("terminals.count", { total: fmtNumber(page.total) }))}</span></h1>
    <div class="filters panel">
      <label>${esc(t("terminals.q"))}<input id="terminals-q" value="${esc(params.get("q") || "")}" maxlength="64" size="28"></label>
      ${select("region", facet("region"))}${select("carrier", facet("carrier"))}${select("model", facet("model"))}
      ${select("readiness", READINESS.map(v => [v, t("readiness." + v)]))}
      <button type="button" id="terminals-clear">${esc(t("filter.clear"))}</button>
    </div>
    <section class="panel">
      <table id="terminals"><thead><tr>
        <th>${esc(t("col.terminal"))}</th><th>${esc(t("col.readiness"))}</th><th>${esc(t("col.merchant"))}</th><th>${esc(t("col.serial"))}</th>
        <th>${esc(t("col.region"))}</th><th>${esc(t("col.carrier"))}</th><th>${esc(t("col.model"))}</th><th>${esc(t("col.versions"))}</th>
        <th>${esc(t("col.open"))}</th><th>${esc(t("col.last_seen"))}</th>
      </tr></thead><tbody>${rows || `<tr><td colspan="10" class="muted">${esc(t("terminals.none"))}</td></tr>`}</tbody></table>
      <div class="pager"><button type="button" id="terminals-prev" ${after ? "" : "disabled"}>${esc(t("page.prev"))}</button>
        <button type="button" id="terminals-next" ${page.next ? "" : "disabled"}>${esc(t("page.next"))}</button></div>
    </section>`;
  const go = changes => {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) { if (!value) next.delete(name); else next.set(name, value); }
    if (!("after" in changes)) next.delete("after");
    location.hash = `#/terminals?${next}`;
  };
  const search = main.querySelector("#terminals-q");
  search.addEventListener("change", () => go({ q: search.value.trim() }));
  if (focused === "terminals-q") { search.focus(); search.setSelectionRange(search.value.length, search.value.length); }
  main.querySelectorAll("select[data-filter]").forEach(node => node.addEventListener("change", () => go({ [node.dataset.filter]: node.value })));
  main.querySelector("#terminals-clear").addEventListener("click", () => { location.hash = "#/terminals"; });
  main.querySelector("#terminals-next").addEventListener("click", () => { terminalPages.push(after); go({ after: page.next }); });
  main.querySelector("#terminals-prev").addEventListener("click", () => go({ after: terminalPages.pop() || "" }));
  main.querySelectorAll("tr.terminal-row").forEach(row => row.addEventListener("click", event => {
    if (event.target.closest("a")) return;
    location.hash = `#/terminal/${encodeURIComponent(row.dataset.terminal)}`;
  }));
}

// ---------- the problem workflow on the terminal page ----------
// The form open on the terminal page ({finding, kind}) and what was typed in it: kept across
// refreshes.
let workflowForm = null;
let workflowDraft = {};
let workflowMessage = null;

async function workflowAct(findingId, action, body) {
  const response = await adminRequest("POST", `/api/v1/findings/${encodeURIComponent(findingId)}/${action}`, body || {});
  if (response) {
    const answer = await response.json().catch(() => null);
    workflowMessage = response.ok ? t("workflow.done") : t("workflow.refused", { error: answer?.error?.message || `${response.status} ${response.statusText}` });
    if (response.ok) { workflowForm = null; workflowDraft = {}; }
  }
  refresh();
}

function workflowFormHtml(findingId, kind) {
  if (kind === "assign") {
    return `<div class="workflow-form" data-form="assign">
      <label>${esc(t("workflow.person"))} <input id="workflow-person" maxlength="100" value="${esc(workflowDraft.person || "")}"></label>
      <label>${esc(t("workflow.party"))} <select id="workflow-party"><option value="">${esc(t("workflow.nobody"))}</option>${PARTIES.map(p => `<option value="${p}" ${workflowDraft.party === p ? "selected" : ""}>${esc(t("party." + p))}</option>`).join("")}</select></label>
      <button type="button" data-save="assign">${esc(t("workflow.save"))}</button> <button type="button" data-cancel>${esc(t("workflow.cancel"))}</button></div>`;
  }
  return `<div class="workflow-form" data-form="${esc(kind)}">
    ${kind === "close" ? `<p class="muted">${esc(t("workflow.close_confirm"))}</p>` : ""}
    <label>${esc(t("workflow.comment_text"))} <textarea id="workflow-text" rows="2" cols="50" maxlength="2000">${esc(workflowDraft.text || "")}</textarea></label>
    <button type="button" data-save="${esc(kind)}">${esc(kind === "close" ? t("workflow.close") : t("workflow.save"))}</button> <button type="button" data-cancel>${esc(t("workflow.cancel"))}</button></div>`;
}

function actionText(entry) {
  const who = entry.detail && (entry.detail.person || entry.detail.party) ? ` → ${assigneeText(entry.detail)}` : "";
  const what = entry.code ? ` ${entry.code}${entry.subject ? ` (${entry.subject})` : ""}` : (entry.detail?.silence ? ` #${entry.detail.silence}` : "");
  return `${entry.actor} ${t("action." + entry.action)}${what}${who}`;
}

function activityList(entries) {
  if (!entries.length) return `<p class="muted">${esc(t("activity.none"))}</p>`;
  return `<ul class="activity">${entries.map(entry => `<li data-action="${esc(entry.action)}" data-entry="${entry.id}">
    <span class="muted">${esc(fmtTime(entry.at))}</span> ${esc(actionText(entry))}
    ${entry.terminal_id ? ` <a href="#/terminal/${encodeURIComponent(entry.terminal_id)}">${esc(entry.terminal_id)}</a>` : ""}
    ${entry.comment ? `<div class="comment">${esc(entry.comment)}</div>` : ""}</li>`).join("")}</ul>`;
}

// The workflow of one open finding (`id`) appended to `node`: its state and the buttons, the
// open form if any, wired.
function attachWorkflow(node, id, workflow) {
  const acked = Boolean(workflow?.acknowledged_by);
  const form = workflowForm?.finding === id ? workflowFormHtml(id, workflowForm.kind) : "";
  node.insertAdjacentHTML("beforeend", `<div class="workflow" data-workflow="${esc(id)}">
    ${workflowBadges(workflow)}${workflow?.comments ? ` <span class="muted">${esc(t("workflow.comments", { count: workflow.comments }))}</span>` : ""}
    <div class="actions" data-needs-role="operator">
      <button type="button" data-act="${acked ? "unacknowledge" : "acknowledge"}">${esc(t(acked ? "workflow.unacknowledge" : "workflow.acknowledge"))}</button>
      <button type="button" data-open="assign">${esc(t("workflow.assign"))}</button>
      <button type="button" data-open="comment">${esc(t("workflow.comment"))}</button>
      <button type="button" data-open="close">${esc(t("workflow.close"))}</button>
    </div>${form}</div>`);
  const controls = node.querySelector(`.workflow[data-workflow="${CSS.escape(id)}"]`);
  controls.querySelector("[data-act]").addEventListener("click", event => workflowAct(id, event.target.dataset.act));
  controls.querySelectorAll("[data-open]").forEach(button => button.addEventListener("click", () => {
    workflowForm = { finding: id, kind: button.dataset.open }; workflowDraft = {}; refresh();
  }));
  controls.querySelector("[data-cancel]")?.addEventListener("click", () => { workflowForm = null; workflowDraft = {}; refresh(); });
  controls.querySelectorAll("input, textarea, select").forEach(input => input.addEventListener("input", () => {
    workflowDraft = { person: controls.querySelector("#workflow-person")?.value, party: controls.querySelector("#workflow-party")?.value, text: controls.querySelector("#workflow-text")?.value };
  }));
  controls.querySelector("[data-save]")?.addEventListener("click", event => {
    const kind = event.target.dataset.save;
    if (kind === "assign") {
      const person = controls.querySelector("#workflow-person").value.trim(), party = controls.querySelector("#workflow-party").value;
      workflowAct(id, "assign", person ? { person } : party ? { party } : {});
    } else {
      const comment = controls.querySelector("#workflow-text").value.trim();
      workflowAct(id, kind, comment ? { comment } : {});
    }
  });
}

async function decorateTerminal(main, terminalId) {
  const [findings, audit] = await Promise.all([
    api(`/api/v1/findings?terminal=${encodeURIComponent(terminalId)}&suppressed=include&limit=1000`),
    api(`/api/v1/audit?terminal=${encodeURIComponent(terminalId)}&limit=50`),
  ]);
  const byId = new Map((findings.findings || []).map(f => [String(f.id), f]));
  main.querySelectorAll("#timeline li.open[data-finding]").forEach(node => attachWorkflow(node, node.dataset.finding, byId.get(node.dataset.finding)?.workflow));
  main.querySelector("#timeline")?.closest("section")?.insertAdjacentHTML("afterend", `
    <section class="panel mt" id="activity"><h2>${esc(t("activity.terminal"))}</h2>
      ${workflowMessage ? `<p id="workflow-message" class="notice">${esc(workflowMessage)}</p>` : ""}
      ${activityList(audit.entries || [])}</section>`);
}

// A localized cause (an outage banner on the overview) is owned like a terminal's finding.
const baseOverviewView = VIEWS.overview.render;
registerView("overview", async (main, current, fresh) => {
  if (fresh) { workflowForm = null; workflowDraft = {}; workflowMessage = null; }
  await baseOverviewView(main, current, fresh);
  for (const outage of overviewCache?.outages || []) {
    const node = main.querySelector(`.outage details[data-outage="${CSS.escape(String(outage.id))}"]`)?.parentElement;
    if (node) attachWorkflow(node, String(outage.id), outage.workflow);
  }
  if (workflowMessage) main.querySelector(".outage")?.insertAdjacentHTML("beforebegin", `<p id="workflow-message" class="notice">${esc(workflowMessage)}</p>`);
});

const baseTerminalView = VIEWS.terminal.render;
registerView("terminal", async (main, current, fresh) => {
  if (fresh) { workflowForm = null; workflowDraft = {}; workflowMessage = null; }
  await baseTerminalView(main, current, fresh);
  if (main.querySelector("#timeline")) await decorateTerminal(main, current.id);
}, "terminals");

// ---------- maintenance windows ----------
const unfoldedWindows = new Set();

function matcherText(matchers) {
  return Object.entries(matchers || {}).map(([name, values]) => `${t("filter." + name) === "filter." + name ? name : t("filter." + name)}: ${values.map(v => name === "party" ? t("party." + v) : v).join(", ")}`).join(" · ");
}

function pad(n) { return String(n).padStart(2, "0"); }

function windowWhen(silence) {
  const r = silence.recurrence;
  if (!r) return `${fmtTime(silence.starts_at)} → ${fmtTime(silence.ends_at)}`;
  // The time of day of the first window in the recurrence's own offset.
  const local = new Date(Date.parse(silence.starts_at) + r.utc_offset_minutes * 60000);
  const offset = r.utc_offset_minutes;
  const zone = `UTC${offset < 0 ? "-" : "+"}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  const time = `${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())} ${zone}`;
  const hours = (r.duration_seconds / 3600).toLocaleString(lang, { maximumFractionDigits: 2 });
  const days = (r.weekdays?.length ? r.weekdays : [DAYS[(local.getUTCDay() + 6) % 7]]).map(d => t("day." + d)).join(lang === "en" ? ", " : "、");
  const every = r.every === "daily" ? t("maintenance.every_day", { time, hours }) : t("maintenance.every_week", { days, time, hours });
  return `${every} · ${t("maintenance.until_time", { time: fmtTime(silence.ends_at) })}`;
}

async function unfoldWindow(node) {
  const list = node.querySelector(".matched-list");
  const answer = await api(`/api/v1/alerts/silences/${node.dataset.silence}`);
  list.innerHTML = (answer.matched || []).map(m => `<li><a href="${m.terminal_id ? `#/terminal/${encodeURIComponent(m.terminal_id)}` : "#/"}">${esc(m.terminal_id || m.subject)}</a> — <code>${esc(m.code)}</code>${m.subject ? ` <span class="muted">(${esc(m.subject)})</span>` : ""}</li>`).join("")
    || `<li class="muted">${esc(t("no.findings"))}</li>`;
}

function maintenanceList(silences) {
  if (!silences.length) return `<p class="muted">${esc(t("maintenance.none"))}</p>`;
  return `<table id="maintenance-windows"><thead><tr><th>#</th><th>${esc(t("maintenance.what"))}</th><th>${esc(t("maintenance.when"))}</th><th></th><th>${esc(t("maintenance.by"))}</th><th></th></tr></thead><tbody>
    ${silences.map(s => `<tr data-silence="${s.id}" data-state="${esc(s.state)}" class="${s.state === "expired" ? "closed" : ""}">
      <td>${s.id}</td>
      <td>${esc(matcherText(s.matchers))}${s.comment ? `<div class="muted">${esc(s.comment)}</div>` : ""}</td>
      <td>${esc(windowWhen(s))}${s.next_start && s.state !== "active" ? `<div class="muted">${esc(t("maintenance.next", { time: fmtTime(s.next_start) }))}</div>` : ""}</td>
      <td>${badge(s.state === "active" ? "ok" : s.state === "expired" ? "unknown" : "warning", t("maintenance.state." + s.state))}
        ${s.matching != null ? `<div><button type="button" class="link" data-unfold="${s.id}">${esc(t("maintenance.matches", { count: fmtNumber(s.matching) }))}</button></div><ul class="matched-list"></ul>` : ""}</td>
      <td>${esc(s.created_by)}<div class="muted">${esc(fmtTime(s.created_at))}</div></td>
      <td>${s.state !== "expired" ? `<button type="button" data-needs-role="operator" data-end="${s.id}">${esc(t("maintenance.end"))}</button>` : ""}</td>
    </tr>`).join("")}</tbody></table>`;
}

let maintenanceMessage = null;

function maintenanceForm(overview) {
  const facets = overview?.facets || {};
  const choose = name => `<label>${esc(t("filter." + name))}<select id="mw-${name}"><option value="">${esc(t("filter.all"))}</option>${(name === "party" ? PARTIES.map(p => [p, t("party." + p)]) : Object.keys(facets[name] || {}).sort().map(v => [v, v])).map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join("")}</select></label>`;
  const now = new Date(Date.now() - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const until = new Date(Date.now() + 30 * 86400000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 10);
  return `<section class="panel" id="maintenance-new" data-needs-role="operator"><h2>${esc(t("maintenance.new"))}</h2>
    <p class="muted">${esc(t("maintenance.help"))}</p>
    <div class="filters">
      ${choose("region")}${choose("carrier")}${choose("model")}${choose("party")}
      <label>${esc(t("col.merchant"))}<input id="mw-merchant" maxlength="200" size="12"></label>
      <label>${esc(t("maintenance.terminal"))}<input id="mw-terminal" maxlength="2000" size="20"></label>
    </div>
    <div class="filters">
      <label>${esc(t("maintenance.kind"))}<select id="mw-kind"><option value="once">${esc(t("maintenance.once"))}</option><option value="daily">${esc(t("maintenance.daily"))}</option><option value="weekly">${esc(t("maintenance.weekly"))}</option></select></label>
      <span id="mw-days">${DAYS.map(d => `<label class="inline"><input type="checkbox" value="${d}"> ${esc(t("day." + d))}</label>`).join("")}</span>
      <label>${esc(t("maintenance.start"))}<input id="mw-start" type="datetime-local" value="${now}"></label>
      <label>${esc(t("maintenance.hours"))}<input id="mw-hours" type="number" min="0.25" max="168" step="0.25" value="2" size="5"></label>
      <label>${esc(t("maintenance.until"))}<input id="mw-until" type="date" value="${until}"></label>
      <label>${esc(t("maintenance.comment"))}<input id="mw-comment" maxlength="1000" size="24"></label>
      <button type="button" id="mw-create">${esc(t("maintenance.create"))}</button>
    </div>
    <p id="mw-message" class="muted"></p>
  </section>`;
}

async function createWindow(main) {
  const value = id => main.querySelector(id).value.trim();
  const matchers = {};
  for (const name of ["region", "carrier", "model", "party", "merchant"]) if (value(`#mw-${name}`)) matchers[name] = [value(`#mw-${name}`)];
  const terminals = value("#mw-terminal").split(",").map(s => s.trim()).filter(Boolean);
  if (terminals.length) matchers.terminal = terminals;
  const message = main.querySelector("#mw-message");
  if (!Object.keys(matchers).length) { message.textContent = t("maintenance.need_match"); return; }
  const start = new Date(value("#mw-start"));
  if (Number.isNaN(start.getTime())) { message.textContent = t("maintenance.need_start"); return; }
  const seconds = Math.round(Number(value("#mw-hours")) * 3600);
  const kind = value("#mw-kind");
  const body = { matchers, starts_at: start.toISOString(), comment: value("#mw-comment") };
  if (kind === "once") body.duration_seconds = seconds;
  else {
    const until = new Date(`${value("#mw-until")}T23:59:59`);
    body.ends_at = until.toISOString();
    body.recurrence = { every: kind, duration_seconds: seconds, utc_offset_minutes: -start.getTimezoneOffset() };
    if (kind === "weekly") body.recurrence.weekdays = [...main.querySelectorAll("#mw-days input:checked")].map(node => node.value);
  }
  const response = await adminRequest("POST", "/api/v1/alerts/silences", body);
  if (!response) return;
  const answer = await response.json().catch(() => null);
  maintenanceMessage = response.ok ? t("maintenance.created", { id: answer.id }) : t("workflow.refused", { error: answer?.error ? `${answer.error.field ? answer.error.field + ": " : ""}${answer.error.message}` : response.statusText });
  message.textContent = maintenanceMessage;
  refresh();
}

async function viewMaintenance(main, current, fresh) {
  const [silences, overview] = await Promise.all([api("/api/v1/alerts/silences"), overviewCache ? Promise.resolve(overviewCache) : api("/api/v1/overview")]);
  overviewCache = overview;
  if (fresh || !main.querySelector("#maintenance-new")) {
    maintenanceMessage = null;
    main.innerHTML = `<h1>${esc(t("maintenance.title"))}</h1>${maintenanceForm(overview)}<section class="panel mt" id="maintenance-list"></section>`;
    main.querySelector("#mw-create").addEventListener("click", () => createWindow(main));
  }
  const list = main.querySelector("#maintenance-list");
  list.innerHTML = maintenanceList(silences.silences || []);
  list.querySelectorAll("[data-end]").forEach(button => button.addEventListener("click", async () => {
    const response = await adminRequest("DELETE", `/api/v1/alerts/silences/${button.dataset.end}`);
    if (response) refresh();
  }));
  list.querySelectorAll("[data-unfold]").forEach(button => {
    const row = button.closest("tr");
    const toggle = () => { if (unfoldedWindows.has(row.dataset.silence)) unfoldWindow(row); else row.querySelector(".matched-list").innerHTML = ""; };
    button.addEventListener("click", () => {
      if (unfoldedWindows.has(row.dataset.silence)) unfoldedWindows.delete(row.dataset.silence); else unfoldedWindows.add(row.dataset.silence);
      toggle();
    });
    if (unfoldedWindows.has(row.dataset.silence)) unfoldWindow(row);
  });
}
registerView("maintenance", viewMaintenance);

// ---------- the audit log ----------
async function viewActivity(main, current) {
  const before = current.params.get("before") || "";
  const answer = await api(`/api/v1/audit?limit=${PAGE_SIZE}${before ? `&before=${encodeURIComponent(before)}` : ""}`);
  const entries = answer.entries || [];
  const oldest = entries.length === PAGE_SIZE ? entries[entries.length - 1].id : null;
  main.innerHTML = `<h1>${esc(t("activity.title"))}</h1><section class="panel" id="audit">${activityList(entries)}
    <div class="pager"><button type="button" id="activity-newest" ${before ? "" : "disabled"}>${esc(t("activity.newest"))}</button>
    <button type="button" id="activity-older" ${oldest ? "" : "disabled"}>${esc(t("activity.older"))}</button></div></section>`;
  main.querySelector("#activity-newest").addEventListener("click", () => { location.hash = "#/activity"; });
  main.querySelector("#activity-older").addEventListener("click", () => { location.hash = `#/activity?before=${oldest}`; });
}
registerView("activity", viewActivity);
registerView("terminals", viewTerminals);
