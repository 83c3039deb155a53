// midge dashboard: live charts and the topic tree from /api/stream (server-sent events), the
// rest from the admin API. The browser sends the admin credentials it was asked for when it
// opened this page with every request of the page (fetch and EventSource alike).
"use strict";

const WINDOW = 300; // seconds of history the charts keep
const PAGES = ["overview", "clients", "topics", "retained", "listeners"];

const state = {
  page: "overview",
  samples: [], // {time, in, out, connections, dropped} per second
  last: null, // the previous stats event (totals)
  series: { time: [], in: [], out: [], connections: [], dropped: [] },
  charts: {},
  topics: new Map(), // topic -> {count, rate, last}
  untracked: 0,
  expanded: new Set(),
  selected: null,
  view: "text",
  shown: null, // the history item the viewer shows
  detail: null, // the selected topic's latest history event (its items: newest first)
  source: null, // the EventSource of /api/stream
  retiring: new Set(), // the streams it replaces, closed once it is open
  clientsAt: 0,
  events: 0,
};
window.midgeDashboard = state; // for the browser test and the curious

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const init = { ...options };
  if (init.body !== undefined) init.headers = { "Content-Type": "application/json" };
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
  return body;
}

// -- payloads ------------------------------------------------------------------------------------

function bytesOf(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function textOf(bytes) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

function hexOf(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const chunk = bytes.subarray(offset, offset + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(chunk, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

function render(item, view) {
  const bytes = bytesOf(item.payload_base64);
  const cut = item.size > bytes.length ? `\n… (${item.size - bytes.length} more bytes)` : "";
  if (view === "hex") return hexOf(bytes) + cut;
  const text = textOf(bytes);
  if (view === "json") {
    if (text === null) return "(not UTF-8 text)";
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return cut ? "(cut short: not whole JSON)" : "(not JSON)";
    }
  }
  return text === null ? "(binary: see hex)" : text + cut;
}

function preview(item) {
  if (!item) return "";
  const text = textOf(bytesOf(item.payload_base64));
  if (text === null) return `<${item.size} bytes>`;
  const line = text.replace(/\s+/g, " ");
  return line.length > 60 ? `${line.slice(0, 60)}…` : line;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString("en");
  return value.toFixed(1);
}

// -- the live stream -----------------------------------------------------------------------------

// The stream explores the selected topic: its history comes with each update in which it
// changed (no request of the page's own each second). Exploring another topic opens a new
// stream, and the old one closes once the new one is open: the broker keeps its table of
// topics while at least one is open.
function connect(explore = null) {
  const query = explore === null ? "" : `?${new URLSearchParams({ explore })}`;
  if (state.source !== null) state.retiring.add(state.source);
  const source = new EventSource(`/api/stream${query}`);
  state.source = source;
  source.addEventListener("open", () => {
    if (state.source !== source) return; // superseded: closed once the newest one is open
    for (const old of state.retiring) old.close();
    state.retiring.clear();
    setStatus("live", true);
  });
  source.addEventListener("error", () => {
    if (state.source === source) setStatus("reconnecting…", false);
  });
  const mine = (handler) => (e) => {
    if (state.source === source) handler(JSON.parse(e.data));
  };
  source.addEventListener("stats", mine(onStats));
  source.addEventListener("topics", mine(onTopics));
  source.addEventListener("history", mine(onHistory));
}

function setStatus(text, live) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("live", live);
}

function onStats(stats) {
  state.events += 1;
  const previous = state.last;
  state.last = stats;
  for (const [key, value] of [
    ["connections", stats.connections],
    ["sessions", stats.sessions],
    ["subscriptions", stats.subscriptions],
    ["retained", stats.retained],
  ]) {
    $(`#card-${key}`).textContent = fmt(value);
  }
  if (previous === null) return; // rates need two samples
  const dt = Math.max((stats.time - previous.time) / 1000, 0.001);
  const sample = {
    time: stats.time / 1000,
    in: Math.max(stats.received - previous.received, 0) / dt,
    out: Math.max(stats.sent - previous.sent, 0) / dt,
    connections: stats.connections,
    dropped: Math.max(stats.dropped - previous.dropped, 0) / dt,
  };
  const series = state.series;
  for (const key of Object.keys(series)) {
    series[key].push(sample[key]);
    if (series[key].length > WINDOW) series[key].shift();
  }
  $("#card-in").textContent = fmt(sample.in);
  $("#card-out").textContent = fmt(sample.out);
  $("#card-dropped").textContent = fmt(sample.dropped);
  drawCharts();
  if (state.page === "clients" && Date.now() - state.clientsAt > 2000) {
    loadClients().catch((error) => console.warn(error.message));
  }
}

function onTopics(update) {
  if (update.full) state.topics.clear();
  else for (const entry of state.topics.values()) entry.rate = 0;
  for (const item of update.topics) {
    state.topics.set(item.topic, { count: item.count, rate: item.rate, last: item.last });
  }
  state.untracked = update.untracked;
  if (state.page === "topics") renderTree();
}

function onHistory(history) {
  if (history.topic !== state.selected) return;
  state.detail = history;
  if (state.page === "topics") renderDetail(history);
}

// -- overview charts -----------------------------------------------------------------------------

function makeChart(id, series) {
  const target = $(id);
  const options = {
    width: Math.max(target.clientWidth - 12, 200),
    height: 180,
    scales: {
      // at least half a minute wide, and from 0 up
      x: { time: true, range: (u, min, max) => [Math.min(min, max - 30), max] },
      y: { range: (u, min, max) => [0, Math.max(max, 1)] },
    },
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: false } }))],
    axes: [{}, { size: 60 }],
    legend: { live: false },
  };
  return new uPlot(options, [[], ...series.map(() => [])], target);
}

function setupCharts() {
  state.charts.messages = makeChart("#chart-messages", [
    ["in", "#16a34a"],
    ["out", "#1f6feb"],
  ]);
  state.charts.connections = makeChart("#chart-connections", [["connections", "#7c3aed"]]);
  state.charts.dropped = makeChart("#chart-dropped", [["dropped", "#dc2626"]]);
  window.addEventListener("resize", resizeCharts);
}

function resizeCharts() {
  for (const [key, chart] of Object.entries(state.charts)) {
    const target = $(`#chart-${key}`);
    if (target.clientWidth > 0) chart.setSize({ width: target.clientWidth - 12, height: 180 });
  }
}

function drawCharts() {
  const s = state.series;
  state.charts.messages.setData([s.time, s.in, s.out]);
  state.charts.connections.setData([s.time, s.connections]);
  state.charts.dropped.setData([s.time, s.dropped]);
}

// -- clients -------------------------------------------------------------------------------------

async function loadClients() {
  state.clientsAt = Date.now();
  const search = $("#client-search").value;
  const query = new URLSearchParams({ limit: "200" });
  if (search) query.set("search", search);
  const page = await api(`/api/clients?${query}`);
  const body = $("#clients-table tbody");
  body.replaceChildren(
    ...page.items.map((c) =>
      el(
        "tr",
        { dataset: { client: c.client_id } },
        el("td", { class: "mono" }, c.client_id),
        el("td", {}, el("span", { class: c.connected ? "pill on" : "pill" }, c.connected ? "connected" : "offline")),
        el("td", {}, { 3: "3.1", 4: "3.1.1", 5: "5.0" }[c.protocol_version] || c.protocol_version),
        el("td", {}, c.username ?? ""),
        el("td", { class: "mono" }, c.address ?? ""),
        el("td", { class: "num" }, c.subscriptions),
        el("td", { class: "num" }, c.queued),
        el("td", { class: "num" }, c.inflight),
        el(
          "td",
          {},
          c.connected
            ? el("button", { class: "danger", onclick: () => disconnect(c.client_id) }, "Disconnect")
            : null,
        ),
      ),
    ),
  );
  $("#client-count").textContent = `${page.total} client${page.total === 1 ? "" : "s"}`;
}

async function disconnect(clientId) {
  if (!confirm(`Disconnect ${clientId}?`)) return;
  try {
    await api(`/api/clients/${encodeURIComponent(clientId)}/disconnect`, {
      method: "POST",
      body: JSON.stringify({ reason_code: 152 }),
    });
  } catch (error) {
    alert(`Not disconnected: ${error.message}`);
  }
  await loadClients();
}

// -- topic tree ----------------------------------------------------------------------------------

function buildTree() {
  const root = { name: "", path: "", children: new Map(), entry: null, rate: 0, topics: 0 };
  const filter = $("#topic-filter").value.trim();
  for (const [topic, entry] of state.topics) {
    if (filter && !topic.includes(filter)) continue;
    let node = root;
    const levels = topic.split("/");
    levels.forEach((level, i) => {
      let child = node.children.get(level);
      if (!child) {
        const path = levels.slice(0, i + 1).join("/");
        child = { name: level, path, children: new Map(), entry: null, rate: 0, topics: 0 };
        node.children.set(level, child);
      }
      child.rate += entry.rate;
      child.topics += 1;
      node = child;
    });
    node.entry = entry;
    root.rate += entry.rate;
    root.topics += 1;
  }
  return root;
}

function renderNode(node, filtering) {
  const open = filtering || state.expanded.has(node.path);
  const hasChildren = node.children.size > 0;
  const row = el(
    "div",
    { class: `node${state.selected === node.path && node.entry ? " selected" : ""}`, dataset: { path: node.path } },
    el("span", { class: "toggle" }, hasChildren ? (open ? "▾" : "▸") : ""),
    el("span", { class: "name" }, node.name === "" ? "(empty)" : node.name),
    hasChildren ? el("span", { class: "meta" }, `${node.topics} topic${node.topics === 1 ? "" : "s"}`) : null,
    el("span", { class: "rate" }, node.rate ? `${fmt(node.rate)} msg/s` : ""),
    node.entry ? el("span", { class: "value" }, preview(node.entry.last)) : null,
  );
  const item = el("li", {}, row);
  if (hasChildren && open) {
    const names = [...node.children.keys()].sort();
    item.append(el("ul", {}, ...names.map((n) => renderNode(node.children.get(n), filtering))));
  }
  return item;
}

function renderTree() {
  const root = buildTree();
  const filtering = $("#topic-filter").value.trim() !== "";
  const names = [...root.children.keys()].sort();
  $("#tree").replaceChildren(...names.map((n) => renderNode(root.children.get(n), filtering)));
  let note = `${state.topics.size} topic${state.topics.size === 1 ? "" : "s"}, ${fmt(root.rate)} msg/s`;
  if (state.untracked) note += ` (${state.untracked} messages of topics past the table's limit)`;
  $("#tree-note").textContent = note;
}

function onTreeClick(event) {
  const row = event.target.closest(".node");
  if (!row) return;
  const path = row.dataset.path;
  const isTopic = state.topics.has(path);
  if (state.expanded.has(path) && !(isTopic && state.selected !== path)) state.expanded.delete(path);
  else state.expanded.add(path);
  if (isTopic) select(path);
  renderTree();
}

function select(topic) {
  state.selected = topic;
  state.shown = null;
  $("#publish-form").elements.topic.value = topic;
  connect(topic); // its first chunk carries the topic's history
}

function renderDetail(history) {
  const topic = state.selected;
  const entry = state.topics.get(topic);
  const items = history.items;
  const shown = state.shown !== null && state.shown < items.length ? items[state.shown] : items[0];
  const tabs = el(
    "div",
    { class: "tabs" },
    ...["text", "json", "hex"].map((view) =>
      el(
        "button",
        {
          type: "button",
          class: state.view === view ? "active" : "",
          dataset: { view },
          onclick: () => {
            state.view = view;
            renderDetail(history);
          },
        },
        { text: "Text", json: "JSON", hex: "Hex" }[view],
      ),
    ),
  );
  const meta = shown
    ? `QoS ${shown.qos}${shown.retain ? ", retained" : ""}, ${shown.size} bytes, ${new Date(shown.time).toLocaleTimeString()}`
    : "no value seen yet";
  const rows = items.map((item, i) =>
    el(
      "tr",
      {
        class: item === shown ? "shown" : "",
        onclick: () => {
          state.shown = i;
          renderDetail(history);
        },
      },
      el("td", {}, new Date(item.time).toLocaleTimeString()),
      el("td", { class: "num" }, item.qos),
      el("td", { class: "num" }, item.size),
      el("td", { class: "mono" }, preview(item)),
    ),
  );
  $("#topic-detail").replaceChildren(
    el("h2", { class: "mono", id: "detail-topic" }, topic),
    el(
      "p",
      { class: "muted" },
      `${history.count} message${history.count === 1 ? "" : "s"} seen, ${fmt(entry ? entry.rate : 0)} msg/s; ${meta}`,
    ),
    tabs,
    el("pre", { class: "value", id: "detail-value" }, shown ? render(shown, state.view) : ""),
    el("h2", {}, `History (last ${items.length})`),
    el(
      "p",
      { class: "muted" },
      "Every value since you picked this topic. Before that: every value of a second with 20 or fewer, only the last of a busier second.",
    ),
    el(
      "table",
      { id: "history-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", { class: "num" }, "QoS"), el("th", { class: "num" }, "Size"), el("th", {}, "Payload"))),
      el("tbody", {}, ...rows),
    ),
  );
}

async function publish(event) {
  event.preventDefault();
  const form = event.target;
  const result = $("#publish-result");
  try {
    const answer = await api("/api/publish", {
      method: "POST",
      body: JSON.stringify({
        topic: form.elements.topic.value,
        payload: form.elements.payload.value,
        qos: Number(form.elements.qos.value),
        retain: form.elements.retain.checked,
      }),
    });
    result.className = "muted";
    result.textContent = answer.matched ? "published" : "published (no subscriber)";
  } catch (error) {
    result.className = "error";
    result.textContent = error.message;
  }
}

// -- retained ------------------------------------------------------------------------------------

async function loadRetained() {
  const filter = $("#retained-filter").value || "#";
  const body = $("#retained-table tbody");
  let page;
  try {
    page = await api(`/api/retained?${new URLSearchParams({ filter, limit: "500" })}`);
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "error" }, error.message)));
    return;
  }
  body.replaceChildren(
    ...page.items.map((m) =>
      el(
        "tr",
        { dataset: { topic: m.topic } },
        el("td", { class: "mono" }, m.topic),
        el("td", { class: "num" }, m.qos),
        el("td", { class: "num" }, m.size),
        el("td", { class: "mono" }, preview(m)),
        el("td", {}, el("button", { class: "danger", onclick: () => clearRetained(m.topic) }, "Clear")),
      ),
    ),
  );
  $("#retained-count").textContent = `${page.total} retained message${page.total === 1 ? "" : "s"}`;
}

async function clearRetained(topic) {
  if (!confirm(`Clear the retained message of ${topic}?`)) return;
  try {
    await api(`/api/retained/message?${new URLSearchParams({ topic })}`, { method: "DELETE" });
  } catch (error) {
    alert(error.message);
  }
  await loadRetained();
}

// -- listeners and configuration -----------------------------------------------------------------

async function loadListeners() {
  const [listeners, config] = await Promise.all([api("/api/listeners"), api("/api/config")]);
  $("#listeners-table tbody").replaceChildren(
    ...listeners.items.map((l) =>
      el(
        "tr",
        {},
        el("td", { class: "mono" }, l.name),
        el("td", {}, l.protocol),
        el("td", { class: "mono" }, l.unix_socket_path ?? l.address ?? "every address"),
        el("td", {}, l.tls ? "yes" : "no"),
        el("td", { class: "mono" }, l.mount_point ?? ""),
        el("td", { class: "num" }, l.connections ?? ""),
        el("td", { class: "num" }, l.accepted ?? ""),
        el("td", { class: "num" }, l.max_connections < 0 ? "∞" : l.max_connections),
      ),
    ),
  );
  $("#config-source").textContent = config.source ? `(${config.source})` : "";
  const rows = Object.entries(config.options).map(([name, value]) =>
    el("tr", {}, el("td", { class: "mono" }, name), el("td", { class: "mono" }, JSON.stringify(value))),
  );
  for (const bridge of config.bridges) {
    rows.push(el("tr", {}, el("td", { class: "mono" }, `bridge ${bridge.name}`), el("td", { class: "mono" }, bridge.addresses.join(", "))));
  }
  $("#config-table tbody").replaceChildren(...rows);
}

// -- pages ---------------------------------------------------------------------------------------

function show() {
  const name = location.hash.slice(1);
  state.page = PAGES.includes(name) ? name : "overview";
  for (const page of PAGES) $(`#page-${page}`).hidden = page !== state.page;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === state.page);
  }
  const load = {
    overview: async () => resizeCharts(),
    clients: loadClients,
    topics: async () => {
      renderTree();
      if (state.detail !== null && state.detail.topic === state.selected) renderDetail(state.detail);
    },
    retained: loadRetained,
    listeners: loadListeners,
  }[state.page];
  load().catch((error) => console.warn(error.message));
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

setupCharts();
$("#tree").addEventListener("click", onTreeClick);
$("#topic-filter").addEventListener("input", debounce(renderTree, 150));
$("#client-search").addEventListener("input", debounce(loadClients, 150));
$("#retained-filter").addEventListener("input", debounce(loadRetained, 300));
$("#publish-form").addEventListener("submit", publish);
window.addEventListener("hashchange", show);
show();
connect();
