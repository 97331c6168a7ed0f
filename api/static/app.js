"use strict";
// The MetricsPage: WebSocket first; REST polling at the guide's intervals while the socket is
// down; every panel marked stale when its data stops being current. Plain JS, no build step.

const POLL_MS = { queries: 10000, tiers: 5000, resources: 2000, routing: 5000 };
const LIVE_MS = 1000; // the WebSocket sends one update a second
const STALE_AFTER = 3; // intervals without a successful update before a panel is stale
const REQUEST_TIMEOUT_MS = 5000;
const BACKOFF = { baseMs: 500, capMs: 10000 };
const PANELS = Object.keys(POLL_MS);

const page = {
  socket: null,
  socketOpen: false,
  attempts: 0, // reconnect attempts since the last update received on the socket
  reconnectTimer: null,
  pollTimers: [],
  apiReachable: null, // null until the first answer or failure
  modeSince: Date.now(), // when the page last switched between socket and polling
  lastUpdateAt: 0,
  node: "", // "" = all nodes
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
  return url;
}

// --- formatting ---------------------------------------------------------------------------------
const num = (value) => String(value); // the API already rounds to 2 decimals
const percentOf = (ratio) => `${(ratio * 100).toFixed(2)}%`;
const lastOf = (values) => (values.length ? num(values[values.length - 1]) : "–");
const clockTime = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${count} B` : `${value.toFixed(1)} ${units[unit]}`;
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
function renderQueries(q) {
  drawQueryChart(q.queryRate);
  const first = q.timestamps[0];
  document.getElementById("query-from").textContent = first ? clockTime(Date.parse(first)) : "";
  document.getElementById("query-to").textContent = "now";
  setText("query-peak", `peak ${num(Math.max(0, ...q.queryRate))} q/s`);
  setText("q-total", num(q.totalQueries));
  setText("q-latency", `${num(q.avgLatencyMs)} ms`);
  const list = document.getElementById("tier-distribution");
  list.replaceChildren(
    ...Object.entries(q.tierDistribution).map(([tier, count]) => {
      const share = q.totalQueries ? (count / q.totalQueries) * 100 : 0;
      return el("li", {}, el("span", {}, tier), bar(share), el("b", { "data-testid": `dist-${tier}` }, num(count)));
    }),
  );
}

function tierCard(tier) {
  const id = `tier-${tier.name}`;
  const row = (label, values, valueId, unit) =>
    el("div", { class: "spark-row" }, el("span", {}, label), sparkline(values, `${valueId}-spark`),
      el("b", {}, el("span", { "data-testid": valueId }, lastOf(values)), unit));
  return el("div", { class: "tier", "data-testid": id },
    el("h3", {}, tier.name),
    row("tokens/s", tier.tokensPerSec, `${id}-tps`, ""),
    row("latency", tier.latencyMs, `${id}-latency`, " ms"),
    el("dl", { class: "stats" },
      el("div", {}, el("dt", {}, "requests"), el("dd", { "data-testid": `${id}-requests` }, num(tier.requestCount))),
      el("div", {}, el("dt", {}, "error rate"), el("dd", { "data-testid": `${id}-errors` }, percentOf(tier.errorRate)))));
}

function renderTiers(tiers) {
  document.getElementById("tier-cards").replaceChildren(...tiers.map(tierCard));
}

function resourceView(resources, node) {
  return node ? resources.nodes.find((entry) => entry.node === node) || null : resources;
}

function renderResources(r) {
  for (const part of ["vram", "memory"]) {
    setText(`res-${part}-used`, num(r[part].used));
    setText(`res-${part}-total`, num(r[part].total));
    setText(`res-${part}-percent`, `${num(r[part].percent)}%`);
    setBar(document.querySelector(`[data-bar="${part}"]`), r[part].percent);
  }
  setText("res-cpu-percent", `${num(r.cpu.percent)}%`);
  setText("res-cpu-cores", num(r.cpu.cores));
  setBar(document.querySelector('[data-bar="cpu"]'), r.cpu.percent);
  setText("res-faiss", bytes(r.faissIndexSize));
  setText("res-redis", bytes(r.redisCacheSize));
  setText("res-connections", num(r.activeConnections));
  setText("res-jobs-active", num(r.threadPoolStatus.active));
  setText("res-jobs-queued", num(r.threadPoolStatus.queued));
  setText("res-disk-read", num(r.diskIO.readMBps));
  setText("res-disk-write", num(r.diskIO.writeMBps));
  setText("res-net-rx", num(r.networkThroughput.rxMBps));
  setText("res-net-tx", num(r.networkThroughput.txMBps));
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
  return el("td", { style: `background: rgba(56, 189, 248, ${alpha.toFixed(3)})`, title: `avg score ${cell.avgScore}` },
    el("b", { "data-testid": `cell-${key}` }, num(cell.count)),
    el("small", { "data-testid": `score-${key}` }, num(cell.avgScore)));
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
  setText("r-total", num(r.accuracyMetrics.totalDecisions));
  setText("r-time", `${num(r.accuracyMetrics.avgDecisionTimeMs)} ms`);
  setText("r-fallback", percentOf(r.accuracyMetrics.fallbackRate));
  document.getElementById("availability").replaceChildren(
    ...r.modelAvailability.map((m) =>
      el("li", { class: m.total && m.available === m.total ? "ok" : m.available ? "degraded" : "down" },
        el("span", {}, m.tier), bar(m.total ? (m.available / m.total) * 100 : 0),
        el("b", { "data-testid": `avail-${m.tier}` }, `${m.available}/${m.total}`))),
  );
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
  accept("queries", update.queries);
  accept("tiers", update.tiers);
  accept("resources", update.resources);
  accept("routing", update.routing);
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
    if (panel !== "resources" || node === page.node) accept(panel, panel === "tiers" ? body.tiers : body, { allNodes: !node });
  }
  refreshFreshness();
}

function pollAll() {
  PANELS.forEach(poll);
}

function startPolling() {
  if (page.pollTimers.length || page.socketOpen) return;
  page.modeSince = Date.now();
  pollAll();
  page.pollTimers = PANELS.map((panel) => setInterval(() => poll(panel), POLL_MS[panel]));
}

function stopPolling() {
  page.pollTimers.forEach(clearInterval);
  page.pollTimers = [];
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
    stopPolling();
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
  const interval = page.socketOpen ? LIVE_MS : POLL_MS[panel];
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

function start() {
  document.getElementById("node-select").addEventListener("change", onNodeChange);
  showState();
  connectSocket();
  // Socket first; if it has not opened within a second (or has failed), poll meanwhile.
  setTimeout(() => page.socketOpen || startPolling(), LIVE_MS);
  setInterval(() => {
    showState();
    refreshFreshness();
  }, LIVE_MS);
}

start();
