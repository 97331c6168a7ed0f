"use strict";
// The MetricsPage: WebSocket first; REST polling at the guide's intervals while the socket is
// down; every panel marked stale when its data stops being current. Plain JS, no build step.

const POLL_MS = { queries: 10000, tiers: 5000, resources: 2000, routing: 5000, latency: 5000, slo: 5000 };
const LIVE_MS = 1000; // the WebSocket sends one update a second
const STALE_AFTER = 3; // intervals without a successful update before a panel is stale
const REQUEST_TIMEOUT_MS = 5000;
const BACKOFF = { baseMs: 500, capMs: 10000 };
const PANELS = Object.keys(POLL_MS);
// The window selector drives these panels. The live stream carries the default (30-minute)
// view; a longer window is read by REST, with ?window=, at the panels' polling intervals.
const WINDOWED = ["queries", "tiers", "routing", "latency"];
const DEFAULT_WINDOW = "30m";
const WINDOW_LABELS = { "30m": "30 min", "6h": "6 h", "24h": "24 h", "7d": "7 d" };
// The latency chart is the server's history of the selected window (/latency/history: 18
// points, each the percentiles of its own queries), read again every HISTORY_MS so that the
// point holding now follows the traffic and new points come in at the right. docs/dashboard.md
const HISTORY_MS = 5000;
const PERCENTILES = ["p50", "p95", "p99"];
// The objectives' burn-rate windows, fastest first (docs/slo.md).
const BURN_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

const page = {
  socket: null,
  socketOpen: false,
  attempts: 0, // reconnect attempts since the last update received on the socket
  reconnectTimer: null,
  pollTimers: {}, // panel -> interval id, for the panels REST feeds now
  apiReachable: null, // null until the first answer or failure
  modeSince: Date.now(), // when the page last switched between socket and polling
  lastUpdateAt: 0,
  node: "", // "" = all nodes
  window: DEFAULT_WINDOW,
  latencyTier: "", // the tier the latency chart shows; "" until the first answer
  history: null, // the latest /latency/history answer for page.window
  nodeNames: [],
  data: {},
  panels: Object.fromEntries(PANELS.map((name) => [name, { okAt: 0, failed: false, note: "" }])),
};

// --- the API token (METRICS_API_TOKEN), where the server asks for one ---------------------------
// Given once in the page's URL, as #token=... (a fragment never reaches the server or its logs)
// or ?token=...; kept for this tab and taken out of the address bar, so that it is not
// bookmarked or shared with the URL. docs/security.md
const TOKEN = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token") || new URLSearchParams(location.search).get("token");
  if (!given) return sessionStorage.getItem("metrics-token") || "";
  sessionStorage.setItem("metrics-token", given);
  history.replaceState(null, "", location.pathname);
  return given;
})();
const AUTH_HEADERS = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

// --- URLs: relative to the page, so a proxy may serve it at / or under a path prefix ------------
function apiUrl(path) {
  return new URL(path, document.baseURI);
}

function socketUrl() {
  const url = apiUrl("api/metrics/ws");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (TOKEN) url.searchParams.set("token", TOKEN); // a browser cannot set a WebSocket's headers
  return url.href;
}

function pollUrl(panel) {
  const url = apiUrl(`api/metrics/${panel}`);
  if (panel === "resources" && page.node) url.searchParams.set("node", page.node);
  if (WINDOWED.includes(panel) && !isLiveView()) url.searchParams.set("window", page.window);
  return url;
}

// --- formatting: every figure on the page goes through these ------------------------------------
// Measures to 3 significant digits with their unit (0.0433 q/s, 563 ms, 16.5 MB/s, 6.41%),
// counts as integers with thousands separators (1,234), "–" where the API has no value.
const NONE = "–";
const known = (value) => value !== null && value !== undefined;
// Three significant digits, trailing zeros dropped: 0.0123, 4.57, 1230, 8.
const sig3 = (value) => String(Number(Number(value).toPrecision(3)));
const measure = (value, unit) => (known(value) ? `${sig3(value)} ${unit}` : NONE);
const ms = (value) => measure(value, "ms");
const perSec = (value) => measure(value, "q/s");
const mbPerSec = (value) => measure(value, "MB/s");
// A percentage, from the API's percent (52.08 -> "52.1%") or from a ratio (0.0641 -> "6.41%").
const percent = (value) => (known(value) ? `${sig3(value)}%` : NONE);
const percentOf = (ratio) => (known(ratio) ? percent(ratio * 100) : NONE);
const factor = (value) => (known(value) ? `${sig3(value)}×` : NONE); // a burn rate
const count = (value) => (known(value) ? Math.round(value).toLocaleString("en-US") : NONE);
const lastOf = (values) => (values.length ? values[values.length - 1] : null);
const clockTime = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
const isLiveView = () => page.window === DEFAULT_WINDOW;

// A time axis label: the clock time, with the day where the window spans more than one.
function axisTime(ms) {
  if (page.window !== "24h" && page.window !== "7d") return clockTime(ms).slice(0, 5);
  const day = new Date(ms).toLocaleDateString("en-GB", { weekday: "short", day: "numeric" });
  return `${day} ${clockTime(ms).slice(0, 5)}`;
}

// A length of time: "45 s", "12.5 min", "3.2 h", "9.5 d".
function duration(seconds) {
  if (seconds < 120) return measure(seconds, "s");
  if (seconds < 7200) return measure(seconds / 60, "min");
  if (seconds < 172800) return measure(seconds / 3600, "h");
  return measure(seconds / 86400, "d");
}

// A size in bytes, in binary units: "512 B", "3.3 MiB", "2.34 GiB".
function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return measure(value, units[unit]);
}

// --- DOM helpers ----------------------------------------------------------------------------------
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

function setText(id, text) {
  byTestId(id).textContent = text;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// A utilisation bar turns amber and red as it fills; a share or availability bar does not.
function setBar(fill, percent, graded = true) {
  const clamped = Math.max(0, Math.min(100, percent));
  fill.style.width = `${clamped}%`;
  fill.className = !graded ? "" : clamped >= 90 ? "high" : clamped >= 70 ? "mid" : "";
}

function bar(percent) {
  const fill = el("i");
  setBar(fill, percent, false);
  return el("div", { class: "bar" }, fill);
}

// --- charts (SVG; only numbers go into markup, names always go through textContent) --------------
function linePoints(values, width, height, max) {
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  return values.map((v, i) => [i * step, height - (v / max) * height]);
}

function pathOf(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
}

function sparkline(values, testId) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("data-testid", testId);
  svg.setAttribute("data-points", String(values.length));
  const max = Math.max(...values, 1e-9);
  if (values.length) svg.innerHTML = `<path d="${pathOf(linePoints(values, 100, 22, max))}"/>`;
  return svg;
}

function drawQueryChart(rates) {
  const svg = document.getElementById("query-chart");
  const [width, height] = [600, 190];
  const max = Math.max(...rates, 0.1) * 1.1;
  const points = linePoints(rates, width, height, max);
  const line = pathOf(points);
  const area = points.length ? `${line} L${width},${height + 10} L0,${height + 10} Z` : "";
  const grid = [0.25, 0.5, 0.75].map((f) => `<line x1="0" x2="${width}" y1="${f * height}" y2="${f * height}"/>`);
  svg.setAttribute("data-points", String(rates.length));
  svg.innerHTML = `${grid.join("")}<path class="area" d="${area}"/><path class="line" d="${line}"/>`;
}

// --- panels ----------------------------------------------------------------------------------------
function renderQueryAxes(q) {
  const starts = q.timestamps.map(Date.parse);
  const stepS = starts.length > 1 ? (starts[1] - starts[0]) / 1000 : 10;
  setText("query-from", starts.length ? axisTime(starts[0]) : "");
  setText("query-mid", starts.length ? axisTime(starts[Math.floor(starts.length / 2)]) : "");
  setText("query-to", "now");
  setText("query-y-max", perSec(Math.max(...q.queryRate, 0.1) * 1.1));
  setText("query-axis-title", `queries per second, one point per ${duration(stepS)} (bucket start)`);
}

function renderQueries(q) {
  drawQueryChart(q.queryRate);
  renderQueryAxes(q);
  setText("query-peak", perSec(Math.max(0, ...q.queryRate)));
  setText("q-total-label", `Queries (${WINDOW_LABELS[page.window]})`);
  setText("q-total", count(q.totalQueries));
  setText("q-latency", ms(q.avgLatencyMs));
  const list = document.getElementById("tier-distribution");
  list.replaceChildren(
    ...Object.entries(q.tierDistribution).map(([tier, n]) => {
      const share = q.totalQueries ? (n / q.totalQueries) * 100 : 0;
      return el("li", {}, el("span", {}, tier), bar(share), el("b", { "data-testid": `dist-${tier}` }, count(n)));
    }),
  );
}

// One figure of a card: its label and its value, under a data-testid.
const stat = (label, testId, text, attrs = {}) =>
  el("div", attrs, el("dt", {}, label), el("dd", { "data-testid": testId }, text));

function tierCard(tier) {
  const id = `tier-${tier.name}`;
  const row = (label, values, valueId, unit) =>
    el("div", { class: "spark-row" }, el("span", {}, label), sparkline(values, `${valueId}-spark`),
      el("b", { "data-testid": valueId }, measure(lastOf(values), unit)));
  return el("div", { class: "tier", "data-testid": id },
    el("h3", {}, tier.name),
    row("tokens", tier.tokensPerSec, `${id}-tps`, "tok/s"),
    row("latency", tier.latencyMs, `${id}-latency`, "ms"),
    el("dl", { class: "stats" },
      stat("p50", `${id}-p50`, ms(tier.p50LatencyMs)),
      stat("p95", `${id}-p95`, ms(tier.p95LatencyMs)),
      stat("p99", `${id}-p99`, ms(tier.p99LatencyMs)),
      stat("TTFT p95", `${id}-ttft`, ttftP95(tier.name))),
    // Goodput: the queries per second that met every objective of the tier; "–" where no
    // objective covers it (the API's null), which is not the same as 0.
    el("dl", { class: "stats" },
      stat("requests", `${id}-requests`, count(tier.requestCount)),
      stat("error rate", `${id}-errors`, percentOf(tier.errorRate)),
      stat("throughput", `${id}-rps`, perSec(tier.requestsPerSec)),
      stat("goodput", `${id}-goodput`, perSec(tier.goodputPerSec),
        { title: "queries per second that met every objective of this tier" })));
}

// TTFT comes from the latency answer of the same window (the /tiers entries do not carry it).
function ttftP95(tierName) {
  const entry = page.data.latency && page.data.latency.tiers.find((t) => t.name === tierName);
  return entry && entry.ttftMs ? ms(entry.ttftMs.p95) : NONE;
}

function renderTiers(tiers) {
  document.getElementById("tier-cards").replaceChildren(...tiers.map(tierCard));
}

function resourceView(resources, node) {
  return node ? resources.nodes.find((entry) => entry.node === node) || null : resources;
}

function renderResources(r) {
  for (const part of ["vram", "memory"]) {
    setText(`res-${part}-used`, sig3(r[part].used));
    setText(`res-${part}-total`, measure(r[part].total, "GiB"));
    setText(`res-${part}-percent`, percent(r[part].percent));
    setBar(document.querySelector(`[data-bar="${part}"]`), r[part].percent);
  }
  setText("res-cpu-percent", percent(r.cpu.percent));
  setText("res-cpu-cores", count(r.cpu.cores));
  setBar(document.querySelector('[data-bar="cpu"]'), r.cpu.percent);
  setText("res-faiss", bytes(r.faissIndexSize));
  setText("res-redis", bytes(r.redisCacheSize));
  setText("res-connections", count(r.activeConnections));
  setText("res-jobs-active", count(r.threadPoolStatus.active));
  setText("res-jobs-queued", count(r.threadPoolStatus.queued));
  setText("res-disk-read", mbPerSec(r.diskIO.readMBps));
  setText("res-disk-write", mbPerSec(r.diskIO.writeMBps));
  setText("res-net-rx", mbPerSec(r.networkThroughput.rxMBps));
  setText("res-net-tx", mbPerSec(r.networkThroughput.txMBps));
}

function updateNodeOptions(names) {
  if (names.join("\n") === page.nodeNames.join("\n")) return; // leave an open <select> alone
  page.nodeNames = names;
  const listed = page.node && !names.includes(page.node) ? [...names, page.node] : names;
  const select = document.getElementById("node-select");
  select.replaceChildren(el("option", { value: "" }, "All nodes"), ...listed.map((n) => el("option", { value: n }, n)));
  select.value = page.node;
}

function heatCell(cell, max) {
  const alpha = max ? 0.12 + 0.78 * (cell.count / max) : 0;
  const key = `${cell.complexity}-${cell.tier}`;
  return el("td", { style: `background: rgba(56, 189, 248, ${alpha.toFixed(3)})`, title: `avg score ${sig3(cell.avgScore)}` },
    el("b", { "data-testid": `cell-${key}` }, count(cell.count)),
    el("small", { "data-testid": `score-${key}` }, sig3(cell.avgScore)));
}

function renderMatrix(cells) {
  const tiers = [...new Set(cells.map((c) => c.tier))];
  const complexities = [...new Set(cells.map((c) => c.complexity))];
  const max = Math.max(0, ...cells.map((c) => c.count));
  const table = byTestId("decision-matrix");
  table.tHead.replaceChildren(el("tr", {}, el("th"), ...tiers.map((t) => el("th", {}, t))));
  table.tBodies[0].replaceChildren(
    ...complexities.map((cx) =>
      el("tr", {}, el("th", {}, cx), ...cells.filter((c) => c.complexity === cx).map((c) => heatCell(c, max)))),
  );
}

function renderRouting(r) {
  renderMatrix(r.decisionMatrix);
  setText("r-total", count(r.accuracyMetrics.totalDecisions));
  setText("r-time", ms(r.accuracyMetrics.avgDecisionTimeMs));
  setText("r-fallback", percentOf(r.accuracyMetrics.fallbackRate));
  document.getElementById("availability").replaceChildren(
    ...r.modelAvailability.map((m) =>
      el("li", { class: m.total && m.available === m.total ? "ok" : m.available ? "degraded" : "down" },
        el("span", {}, m.tier), bar(m.total ? (m.available / m.total) * 100 : 0),
        el("b", { "data-testid": `avail-${m.tier}` }, `${count(m.available)}/${count(m.total)}`))),
  );
}

// --- the latency panel: the window's percentiles point by point, from the server ----------------
async function pollHistory() {
  const window = page.window;
  const url = apiUrl("api/metrics/latency/history");
  url.searchParams.set("window", window);
  let body;
  try {
    const response = await fetch(url, { cache: "no-store", headers: AUTH_HEADERS, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (!response.ok) return; // the panel's freshness says why, from its own answers
    body = await response.json();
  } catch {
    return;
  }
  if (window !== page.window) return; // an answer for a window no longer selected
  page.history = body;
  drawLatencyChart(page.history, page.latencyTier);
}

function updateLatencyTiers(names) {
  const select = document.getElementById("latency-tier");
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }
  if (!names.includes(page.latencyTier)) page.latencyTier = names[0] || "";
  select.value = page.latencyTier;
}

// One path per percentile across the window's points; a point with no query is a gap, and a
// point between gaps a dot (a zero-length segment with round caps).
function percentilePath(values, x, y) {
  let d = "";
  values.forEach((value, i) => {
    if (value === null) return;
    const at = `${x(i).toFixed(1)},${y(value).toFixed(1)}`;
    d += i > 0 && values[i - 1] !== null ? ` L${at}` : ` M${at} L${at}`;
  });
  return d.trim();
}

function drawLatencyChart(history, tier) {
  const svg = document.getElementById("latency-chart");
  const [width, height] = [600, 190];
  const entry = history && history.tiers.find((t) => t.name === tier);
  const starts = history ? history.timestamps.map(Date.parse) : [];
  const max = Math.max(...(entry ? entry.p99.filter((v) => v !== null) : []), 1) * 1.1;
  const x = (i) => (starts.length > 1 ? (i / (starts.length - 1)) * width : 0);
  const y = (value) => height - (value / max) * height;
  const line = (p) => {
    const values = entry ? entry[p] : [];
    const listed = values.map((v) => (v === null ? "" : String(v))).join(",");
    return `<path class="line ${p}" data-percentile="${p}" data-values="${listed}" d="${percentilePath(values, x, y)}"/>`;
  };
  const grid = [0.25, 0.5, 0.75].map((f) => `<line x1="0" x2="${width}" y1="${f * height}" y2="${f * height}"/>`);
  svg.setAttribute("data-points", String(starts.length));
  svg.innerHTML = `${grid.join("")}${PERCENTILES.map(line).join("")}`;
  setText("latency-y-max", ms(max));
  setText("latency-from", starts.length ? axisTime(starts[0]) : "");
  setText("latency-to", starts.length ? "now" : "");
  setText("latency-axis-title", history
    ? `p50, p95, p99 of each ${duration(history.pointSeconds)} point's own queries, ms (point start; the last holds now)`
    : "");
}

function renderLatency(answer) {
  updateLatencyTiers(answer.tiers.map((t) => t.name));
  drawLatencyChart(page.history, page.latencyTier);
  const entry = answer.tiers.find((t) => t.name === page.latencyTier);
  const d = entry ? entry.latencyMs : null;
  for (const p of [...PERCENTILES, "p999"]) setText(`lat-${p}`, d ? ms(d[p]) : NONE);
  setText("lat-ttft-p95", entry && entry.ttftMs ? ms(entry.ttftMs.p95) : NONE);
  setText("lat-count", d ? count(d.count) : NONE);
  if (page.data.tiers) renderTiers(page.data.tiers); // the cards' TTFT comes from this answer
}

function onLatencyTierChange(event) {
  page.latencyTier = event.target.value;
  if (page.data.latency) renderLatency(page.data.latency);
}

// --- the objectives panel: budget, burn rates, state and time to exhaustion per objective ---------
function objectiveGoal(o) {
  const target = `${percentOf(o.target)} over ${duration(o.windowSeconds)}`;
  if (o.kind !== "latency") return `${o.tier} · ${o.kind} · ${target}`;
  return `${o.tier} · ${o.figure} ≤ ${ms(o.effectiveThresholdMs)} · ${target}`;
}

function exhaustionText(seconds) {
  if (seconds === null || seconds === undefined) return "not burning";
  return seconds <= 0 ? "budget exhausted" : `exhausted in ${duration(seconds)}`;
}

function budgetBar(ratio) {
  const fill = el("i");
  setBar(fill, ratio * 100, false);
  fill.className = ratio <= 0.1 ? "high" : ratio <= 0.5 ? "mid" : "ok";
  return el("div", { class: "bar budget" }, fill);
}

function burnRates(o, id) {
  const firing = new Set(o.alerts.filter((a) => a.firing).flatMap((a) => a.windows.split("/")));
  return el("dl", { class: "burns" },
    ...BURN_WINDOWS.map((w) => {
      return el("div", { class: firing.has(w) ? "firing" : "" }, el("dt", {}, w),
        el("dd", { "data-testid": `${id}-burn-${w}` }, factor(o.burnRates[w])));
    }));
}

function objectiveCard(o) {
  const id = `slo-${o.name}`;
  return el("div", { class: `slo slo-${o.state}`, "data-testid": id, "data-state": o.state },
    el("div", { class: "slo-head" },
      el("h3", {}, o.name),
      el("span", { class: `slo-state slo-state-${o.state}`, "data-testid": `${id}-state` }, o.state)),
    el("p", { class: "muted slo-goal" }, objectiveGoal(o)),
    el("div", { class: "slo-budget" },
      el("span", { class: "muted" }, "budget left"), budgetBar(o.errorBudgetRemaining),
      el("b", { "data-testid": `${id}-budget` }, percentOf(o.errorBudgetRemaining))),
    burnRates(o, id),
    el("p", { class: "muted" },
      el("span", { "data-testid": `${id}-exhausted` }, exhaustionText(o.exhaustedInSeconds)),
      ` · ${count(o.good)}/${count(o.total)} good`));
}

function renderSlo(answer) {
  const objectives = answer.objectives;
  byTestId("slo-empty").hidden = objectives.length > 0;
  document.getElementById("slo-list").replaceChildren(...objectives.map(objectiveCard));
  const counts = ["page", "ticket", "ok"].map((state) => [state, objectives.filter((o) => o.state === state).length]);
  setText("slo-summary", counts.filter(([, n]) => n).map(([state, n]) => `${n} ${state}`).join(" · "));
}

// --- accepting data, from the socket or from a poll ----------------------------------------------
function markOk(panel) {
  page.panels[panel] = { okAt: Date.now(), failed: false, note: "" };
  page.lastUpdateAt = Date.now();
}

function markFailed(panel, note) {
  Object.assign(page.panels[panel], { failed: true, note });
}

function showResources() {
  const view = page.data.resources && resourceView(page.data.resources, page.node);
  if (!view) return markFailed("resources", `node ${page.node} is not reporting`);
  renderResources(view);
}

function accept(panel, data, { allNodes = true } = {}) {
  page.data[panel] = data;
  markOk(panel);
  if (panel === "queries") renderQueries(data);
  if (panel === "tiers") renderTiers(data);
  if (panel === "routing") renderRouting(data);
  if (panel === "latency") renderLatency(data);
  if (panel === "slo") renderSlo(data);
  if (panel === "resources") {
    if (allNodes) updateNodeOptions(data.nodes.map((n) => n.node));
    showResources();
  }
  refreshFreshness();
  showState();
}

function onSocketMessage(event) {
  const update = JSON.parse(event.data);
  if (update.type !== "metrics_update") return;
  page.attempts = 0; // reset here, not on open: a server that accepts then drops must back off
  accept("resources", update.resources);
  if (update.slo) accept("slo", update.slo); // the objectives' own windows, on every view
  if (!isLiveView()) return; // the stream is the 30-minute view; REST feeds a longer window
  accept("queries", update.queries);
  accept("tiers", update.tiers);
  accept("routing", update.routing);
  if (update.latency) accept("latency", update.latency);
}

// --- REST polling, while the socket is down -------------------------------------------------------
async function errorNote(response) {
  try {
    return (await response.json()).message || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function poll(panel) {
  const node = page.node;
  const window = page.window;
  let response;
  try {
    response = await fetch(pollUrl(panel), { cache: "no-store", headers: AUTH_HEADERS, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch {
    return setReachable(false);
  }
  setReachable(true);
  if (!response.ok) {
    markFailed(panel, await errorNote(response)); // e.g. 503 while Redis is away
  } else {
    const body = await response.json();
    // An answer for a node or window no longer selected is dropped.
    const current = panel === "resources" ? node === page.node : !WINDOWED.includes(panel) || window === page.window;
    if (current) accept(panel, panel === "tiers" ? body.tiers : body, { allNodes: !node });
  }
  refreshFreshness();
}

// The panels REST must feed now: all of them while the socket is down; with the socket open,
// those of a window longer than the stream's.
function restPanels() {
  if (!page.socketOpen) return PANELS;
  return isLiveView() ? [] : WINDOWED;
}

function isPolled(panel) {
  return panel in page.pollTimers;
}

function pollAll() {
  Object.keys(page.pollTimers).forEach(poll);
}

// Start the timers of the panels REST must feed now, each polled at once, and stop the others.
function syncPolling() {
  const wanted = restPanels();
  for (const panel of Object.keys(page.pollTimers)) {
    if (wanted.includes(panel)) continue;
    clearInterval(page.pollTimers[panel]);
    delete page.pollTimers[panel];
  }
  for (const panel of wanted) {
    if (isPolled(panel)) continue;
    poll(panel);
    page.pollTimers[panel] = setInterval(() => poll(panel), POLL_MS[panel]);
  }
}

function startPolling() {
  if (page.socketOpen) return;
  if (!PANELS.every(isPolled)) page.modeSince = Date.now();
  syncPolling();
}

function setReachable(reachable) {
  const was = page.apiReachable;
  page.apiReachable = reachable;
  if (!reachable) PANELS.forEach((panel) => markFailed(panel, "API unreachable"));
  if (reachable && was === false) {
    pollAll(); // every panel fresh at once, not at its next interval
    retrySocketSoon();
  }
  showState();
  refreshFreshness();
}

// --- the WebSocket, with exponential backoff and full jitter --------------------------------------
function connectSocket() {
  page.reconnectTimer = null;
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch {
    return scheduleReconnect();
  }
  page.socket = socket;
  socket.onopen = () => {
    page.socketOpen = true;
    page.modeSince = Date.now();
    syncPolling(); // stops every timer, or keeps those of a longer window
    setReachable(true);
  };
  socket.onmessage = onSocketMessage;
  socket.onclose = () => {
    page.socket = null;
    page.socketOpen = false;
    startPolling();
    showState();
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  if (page.reconnectTimer || page.socket) return;
  const ceiling = Math.min(BACKOFF.capMs, BACKOFF.baseMs * 2 ** page.attempts);
  page.attempts += 1;
  page.reconnectTimer = setTimeout(connectSocket, Math.random() * ceiling);
}

function retrySocketSoon() {
  if (page.socket) return;
  clearTimeout(page.reconnectTimer);
  page.reconnectTimer = null;
  page.attempts = 0; // the API is back: start the backoff over, still jittered
  scheduleReconnect();
}

// --- connection state and staleness ---------------------------------------------------------------
function connectionState() {
  if (page.socketOpen) return "live";
  if (page.apiReachable === false) return "reconnecting";
  return page.apiReachable ? "polling" : "connecting";
}

function showState() {
  const badge = byTestId("connection-state");
  const state = connectionState();
  badge.textContent = state;
  badge.className = `state state-${state}`;
  setText("last-update", page.lastUpdateAt ? `last update ${clockTime(page.lastUpdateAt)}` : "");
}

function isStale(panel) {
  const { okAt, failed } = page.panels[panel];
  if (!okAt || failed) return true;
  const interval = isPolled(panel) ? POLL_MS[panel] : LIVE_MS;
  return Date.now() - Math.max(okAt, page.modeSince) > STALE_AFTER * interval;
}

function freshnessText(panel, stale) {
  const { okAt, note } = page.panels[panel];
  if (!stale) return `updated ${clockTime(okAt)}`;
  const since = okAt ? `last update ${clockTime(okAt)}` : "no data yet";
  return `stale · ${note ? `${note} · ` : ""}${since}`;
}

function refreshFreshness() {
  for (const panel of PANELS) {
    const section = byTestId(`panel-${panel}`);
    const { okAt, failed } = page.panels[panel];
    const loading = !okAt && !failed;
    const stale = !loading && isStale(panel);
    section.dataset.state = loading ? "loading" : stale ? "stale" : "fresh";
    section.classList.toggle("stale", stale);
    setText(`freshness-${panel}`, loading ? "loading" : freshnessText(panel, stale));
  }
}

// --- start ------------------------------------------------------------------------------------------
function onNodeChange(event) {
  page.node = event.target.value;
  if (page.socketOpen) showResources();
  else poll("resources");
  refreshFreshness();
}

// A new window: the charts start over, and its panels are read by REST at once (the socket
// feeds them again when the 30-minute view comes back).
function onWindowChange(event) {
  page.window = event.target.value;
  page.history = null;
  drawLatencyChart(null, page.latencyTier);
  pollHistory();
  page.modeSince = Date.now();
  for (const panel of WINDOWED) {
    clearInterval(page.pollTimers[panel]);
    delete page.pollTimers[panel];
    Object.assign(page.panels[panel], { okAt: 0, failed: false, note: "" }); // loading again
  }
  if (page.socketOpen && isLiveView()) WINDOWED.forEach(poll); // no wait for the next message
  syncPolling();
  refreshFreshness();
}

function start() {
  document.getElementById("node-select").addEventListener("change", onNodeChange);
  document.getElementById("window-select").addEventListener("change", onWindowChange);
  document.getElementById("latency-tier").addEventListener("change", onLatencyTierChange);
  showState();
  connectSocket();
  pollHistory();
  setInterval(pollHistory, HISTORY_MS);
  // Socket first; if it has not opened within a second (or has failed), poll meanwhile.
  setTimeout(() => page.socketOpen || startPolling(), LIVE_MS);
  setInterval(() => {
    showState();
    refreshFreshness();
  }, LIVE_MS);
}

start();
