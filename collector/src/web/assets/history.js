// History that lasts (collector/src/history/): the overview's trend and the terminal page's
// charts over 24 h / 7 d / 30 d / 90 d from /api/v1/history/..., with gaps where no report
// came (null points break the line), and the availability page (/api/v1/availability) with
// its CSV download. Loaded after app.js: it wraps the overview's and the terminal's views and
// registers its own; app.js only marks where the trend panel is (id="trend").
"use strict";

const HISTORY_RANGES = ["24h", "7d", "30d", "90d"];
let historyRange = HISTORY_RANGES.includes(localStorage.getItem("posmon.history.range")) ? localStorage.getItem("posmon.history.range") : "24h";
// Answers kept for a minute: the page refreshes every few seconds, the history moves slowly.
const historyCache = new Map();
const HISTORY_CACHE_MS = 60_000;

async function historyApi(path) {
  const hit = historyCache.get(path);
  if (hit && Date.now() - hit.at < HISTORY_CACHE_MS) return hit.data;
  const data = await api(path);
  historyCache.set(path, { at: Date.now(), data });
  if (historyCache.size > 50) historyCache.delete(historyCache.keys().next().value);
  return data;
}

addStrings({
  en: {
    "nav.availability": "Availability",
    "history.range.24h": "24 h", "history.range.7d": "7 days", "history.range.30d": "30 days", "history.range.90d": "90 days",
    "history.trend": "Terminals by readiness", "history.empty": "No history for this range yet.",
    "history.gap": "Gaps: no report came (or the collector was not running).",
    "history.terminal": "History", "history.latency": "Connect latency (ms), slowest target",
    "history.loss": "Packet loss (%), worst rung", "history.readiness": "Readiness",
    "availability.title": "Availability", "availability.by": "Group by",
    "availability.from": "From", "availability.to": "To (exclusive)", "availability.show": "Show",
    "availability.download": "Download CSV", "availability.last": "Last {days} days", "availability.last_month": "Last month",
    "availability.definition": "Available: share of the time whose readiness is known that the terminals could take payments (can pay or at risk). Unknown time — a silent terminal, the collector not running, before the first report — is shown apart and left out of the share.",
    "availability.group": "Group", "availability.none": "(no label)", "availability.terminals": "Terminals",
    "availability.share": "Available", "availability.cannot_pay": "Cannot pay (h)", "availability.unknown": "Unknown (h)",
    "availability.empty": "No terminal has history in this period.", "availability.truncated": "{count} more groups not shown (the CSV has the same first groups).",
    "availability.by.region": "Region", "availability.by.carrier": "Carrier", "availability.by.model": "Model", "availability.by.merchant": "Merchant",
  },
  "zh-CN": {
    "nav.availability": "可用率",
    "history.range.24h": "24 小时", "history.range.7d": "7 天", "history.range.30d": "30 天", "history.range.90d": "90 天",
    "history.trend": "按收款状态统计的终端", "history.empty": "该时间范围内还没有历史数据。",
    "history.gap": "断开处：没有收到报告（或采集器未运行）。",
    "history.terminal": "历史", "history.latency": "连接延迟（毫秒），最慢的目标",
    "history.loss": "丢包率（%），最差的一级", "history.readiness": "收款状态",
    "availability.title": "可用率", "availability.by": "分组方式",
    "availability.from": "开始", "availability.to": "结束（不含）", "availability.show": "显示",
    "availability.download": "下载 CSV", "availability.last": "最近 {days} 天", "availability.last_month": "上个月",
    "availability.definition": "可用率：在收款状态已知的时间里，终端能够收款（可以收款或有风险）的时间占比。未知时间（终端无报告、采集器未运行、首次报告之前）单独列出，不计入占比。",
    "availability.group": "分组", "availability.none": "（无标签）", "availability.terminals": "终端数",
    "availability.share": "可用率", "availability.cannot_pay": "无法收款（小时）", "availability.unknown": "未知（小时）",
    "availability.empty": "该时间段内没有终端的历史数据。", "availability.truncated": "另有 {count} 个分组未显示（CSV 中为相同的前若干分组）。",
    "availability.by.region": "地区", "availability.by.carrier": "运营商", "availability.by.model": "型号", "availability.by.merchant": "商户",
  },
});

function rangeSwitch() {
  return `<div class="range-switch" role="group">${HISTORY_RANGES.map(r =>
    `<button type="button" data-range="${r}" class="${r === historyRange ? "active" : ""}" aria-pressed="${r === historyRange}">${esc(t("history.range." + r))}</button>`).join("")}</div>`;
}

function onRangeClick(root, redraw) {
  root.querySelectorAll(".range-switch button").forEach(button => button.addEventListener("click", () => {
    historyRange = button.dataset.range;
    localStorage.setItem("posmon.history.range", historyRange);
    redraw();
  }));
}

function axisTime(at) {
  const date = new Date(at * 1000);
  return historyRange === "24h" ? date.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }) : date.toLocaleDateString(lang, { month: "short", day: "numeric" });
}

// Lines over points {at, values...}; a null value ends a segment (a gap), and a lone point
// between gaps is a dot.
function gapChart(points, series, opts) {
  const width = opts.width || 1000, height = opts.height || 220, left = 56, bottom = 24, top = 10;
  const values = points.flatMap(p => series.map(([name]) => p[name]).filter(v => v !== null && v !== undefined));
  if (!values.length) return `<p class="muted history-empty">${esc(t("history.empty"))}</p>`;
  const max = Math.max(opts.minMax || 1, ...values);
  const first = points[0].at, last = points[points.length - 1].at, span = Math.max(1, last - first);
  const x = at => left + (width - left - 8) * (at - first) / span;
  const y = v => top + (height - top - bottom) * (1 - v / max);
  const tick = v => (max < 10 ? v.toFixed(1) : fmtNumber(Math.round(v)));
  const grid = [0, 0.5, 1].map(f => `<text x="${left - 6}" y="${y(max * f) + 4}" text-anchor="end">${tick(max * f)}</text><line class="axis" x1="${left}" x2="${width}" y1="${y(max * f)}" y2="${y(max * f)}"/>`).join("");
  let gaps = 0;
  const lines = series.map(([name, colour]) => {
    const segments = [];
    let current = [];
    for (const p of points) {
      const v = p[name];
      if (v === null || v === undefined) { if (current.length) segments.push(current); current = []; continue; }
      current.push(p);
    }
    if (current.length) segments.push(current);
    gaps = Math.max(gaps, segments.length - 1);
    return segments.map(segment => segment.length === 1
      ? `<circle class="history-dot" data-series="${esc(name)}" cx="${x(segment[0].at).toFixed(1)}" cy="${y(segment[0][name]).toFixed(1)}" r="2.5" fill="${colour}"/>`
      : `<polyline class="history-line" data-series="${esc(name)}" fill="none" stroke="${colour}" stroke-width="2.5" points="${segment.map(p => `${x(p.at).toFixed(1)},${y(p[name]).toFixed(1)}`).join(" ")}"/>`).join("");
  }).join("");
  const times = [first, (first + last) / 2, last].map((at, i) => `<text x="${x(at)}" y="${height - 4}" text-anchor="${["start", "middle", "end"][i]}">${esc(axisTime(at))}</text>`).join("");
  return `<svg class="chart history-chart" data-gaps="${gaps}" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img">${grid}${lines}${times}</svg>`;
}

// ---------- the overview's trend ----------
async function drawFleetHistory(main) {
  const panel = main.querySelector("#trend");
  if (!panel) return;
  const data = await historyApi(`/api/v1/history/fleet?range=${historyRange}`);
  const series = [["cannot_pay", "var(--critical)"], ["at_risk", "var(--warning)"], ["unknown", "var(--muted)"], ["can_pay", "var(--ok)"]];
  const legend = series.map(([name]) => `<span><i class="swatch-${name}"></i>${esc(t("readiness." + name))}</span>`).join("");
  panel.innerHTML = `<div class="history-head"><h2>${esc(t("history.trend"))}</h2>${rangeSwitch()}</div>
    <div id="history-fleet" data-range="${esc(historyRange)}" data-points="${data.series.points.length}">${gapChart(data.series.points, series, {})}</div>
    <div class="legend">${legend}</div><p class="muted small">${esc(t("history.gap"))}</p>`;
  onRangeClick(panel, () => drawFleetHistory(main));
}

const historyOverview = VIEWS.overview.render;
registerView("overview", async (main, current, fresh) => {
  await historyOverview(main, current, fresh);
  await drawFleetHistory(main);
}, VIEWS.overview.nav);

// ---------- the terminal page ----------
function readinessBand(intervals, from, to) {
  const width = 1000, height = 26, left = 56;
  const span = Math.max(1, to - from);
  const x = at => left + (width - left - 8) * (at - from) / span;
  const colour = { can_pay: "var(--ok)", at_risk: "var(--warning)", cannot_pay: "var(--critical)", unknown: "var(--muted)" };
  const rects = intervals.map(i => `<rect data-readiness="${esc(i.readiness)}" x="${x(i.from).toFixed(1)}" y="2" width="${Math.max(1, x(i.to) - x(i.from)).toFixed(1)}" height="${height - 4}" fill="${colour[i.readiness] || "var(--muted)"}"><title>${esc(t("readiness." + i.readiness))}: ${esc(fmtTime(i.from))} → ${esc(fmtTime(i.to))}</title></rect>`).join("");
  return `<svg class="chart history-band" viewBox="0 0 ${width} ${height}" preserveAspectRatio="none" role="img">${rects}</svg>`;
}

async function drawTerminalHistory(main, id) {
  let section = main.querySelector("#history-terminal");
  if (!section) {
    section = document.createElement("section");
    section.className = "panel mt";
    section.id = "history-terminal";
    const path = main.querySelector("#path");
    if (!path) return;
    path.after(section);
  }
  const data = await historyApi(`/api/v1/history/terminals/${encodeURIComponent(id)}?range=${historyRange}`);
  const series = data.series;
  const body = series ? `
      <div class="muted">${esc(t("history.readiness"))}</div>${readinessBand(series.readiness, series.from, series.to)}
      <div class="muted mt">${esc(t("history.latency"))}</div><div id="history-latency">${gapChart(series.points, [["latency_ms", "var(--accent)"]], { height: 160, minMax: 1 })}</div>
      <div class="muted mt">${esc(t("history.loss"))}</div><div id="history-loss">${gapChart(series.points, [["loss_percent", "var(--warning)"]], { height: 120, minMax: 10 })}</div>
      <p class="muted small">${esc(t("history.gap"))}</p>` : `<p class="muted">${esc(t("history.empty"))}</p>`;
  section.dataset.range = historyRange;
  section.innerHTML = `<div class="history-head"><h2>${esc(t("history.terminal"))}</h2>${rangeSwitch()}</div>${body}`;
  onRangeClick(section, () => drawTerminalHistory(main, id));
}

const historyTerminal = VIEWS.terminal.render;
registerView("terminal", async (main, current, fresh) => {
  await historyTerminal(main, current, fresh);
  await drawTerminalHistory(main, current.id);
}, VIEWS.terminal.nav);

// ---------- availability ----------
const AVAILABILITY_BY = ["region", "carrier", "model", "merchant"];

function isoDay(date) { return date.toISOString().slice(0, 10); }

async function viewAvailability(main, current) {
  const params = current.params;
  const by = AVAILABILITY_BY.includes(params.get("by")) ? params.get("by") : "region";
  const today = new Date(); today.setUTCHours(0, 0, 0, 0);
  const tomorrow = new Date(today.getTime() + 86_400_000);
  const fromDay = /^\d{4}-\d{2}-\d{2}$/.test(params.get("from") || "") ? params.get("from") : isoDay(new Date(tomorrow.getTime() - 30 * 86_400_000));
  const toDay = /^\d{4}-\d{2}-\d{2}$/.test(params.get("to") || "") ? params.get("to") : isoDay(tomorrow);
  const query = `by=${by}&from=${fromDay}T00:00:00Z&to=${toDay}T00:00:00Z`;
  let data, error = null;
  try { data = await historyApi(`/api/v1/availability?${query}`); } catch (e) { error = e; }
  const hours = s => (s / 3600).toFixed(1);
  const rows = data ? data.groups.map(g => `<tr data-group="${esc(g.group)}"><td>${g.group ? esc(g.group) : `<span class="muted">${esc(t("availability.none"))}</span>`}</td>
      <td class="num">${fmtNumber(g.terminals)}</td>
      <td class="num"><strong>${g.available_share === null ? "–" : (100 * g.available_share).toFixed(2) + " %"}</strong></td>
      <td class="num">${hours(g.seconds.cannot_pay)}</td><td class="num">${hours(g.seconds.unknown)}</td></tr>`).join("") : "";
  const month = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - 1, 1));
  const monthEnd = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const presets = [[7, null], [30, null], [90, null], [null, "month"]].map(([days]) => days
    ? `<a class="preset" href="#/availability?by=${by}&from=${isoDay(new Date(tomorrow.getTime() - days * 86_400_000))}&to=${isoDay(tomorrow)}">${esc(t("availability.last", { days }))}</a>`
    : `<a class="preset" href="#/availability?by=${by}&from=${isoDay(month)}&to=${isoDay(monthEnd)}">${esc(t("availability.last_month"))}</a>`).join(" · ");
  main.innerHTML = `<h1>${esc(t("availability.title"))}</h1>
    <section class="panel"><form id="availability-form" class="filters">
      <label>${esc(t("availability.by"))}<select name="by">${AVAILABILITY_BY.map(b => `<option value="${b}"${b === by ? " selected" : ""}>${esc(t("availability.by." + b))}</option>`).join("")}</select></label>
      <label>${esc(t("availability.from"))}<input type="date" name="from" value="${esc(fromDay)}"></label>
      <label>${esc(t("availability.to"))}<input type="date" name="to" value="${esc(toDay)}"></label>
      <button type="submit">${esc(t("availability.show"))}</button>
      <a id="availability-csv" class="button" href="/api/v1/availability?${esc(query)}&format=csv" download>${esc(t("availability.download"))}</a>
    </form><p class="muted">${presets}</p><p class="muted small">${esc(t("availability.definition"))}</p></section>
    <section class="panel mt">${error ? `<p class="error">${esc(t("error", { error: error.message }))}</p>`
      : rows ? `<table id="availability"><thead><tr><th>${esc(t("availability.by." + by))}</th><th class="num">${esc(t("availability.terminals"))}</th><th class="num">${esc(t("availability.share"))}</th><th class="num">${esc(t("availability.cannot_pay"))}</th><th class="num">${esc(t("availability.unknown"))}</th></tr></thead><tbody>${rows}</tbody></table>
        ${data.truncated_groups ? `<p class="muted">${esc(t("availability.truncated", { count: data.truncated_groups }))}</p>` : ""}`
      : `<p class="muted">${esc(t("availability.empty"))}</p>`}</section>`;
  main.querySelector("#availability-form").addEventListener("submit", event => {
    event.preventDefault();
    const form = new FormData(event.target);
    location.hash = `#/availability?by=${encodeURIComponent(form.get("by"))}&from=${encodeURIComponent(form.get("from"))}&to=${encodeURIComponent(form.get("to"))}`;
  });
}

registerView("availability", viewAvailability);
