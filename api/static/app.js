// The device page: a token (kept in sessionStorage only), a client, the fleet table (most and
// least used devices, a sparkline each), the picked device's series with the previous period
// beside it, the same numbers as a table, and today's value updating live. It only calls the
// product's own API (docs/api.md).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "devact.token";
const FLEET_SIZE = 10;
const SVG = "http://www.w3.org/2000/svg";
const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", device: null, live: null, plot: null };

function say(text) { $("message").textContent = text || ""; }

// A table cell holding `text` as text: what the API answers is never parsed as HTML.
function cell(text, className, title) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  if (title) td.title = title;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function isoDay(date) { return date.toISOString().slice(0, 10); }

async function api(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
  const response = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function range() {
  return { metric: $("metric").value, start_date: $("start").value, end_date: $("end").value };
}

async function loadClients() {
  say("");
  const { clients } = await api("/v2/clients");
  const select = $("client");
  select.replaceChildren(...clients.map((c) => new Option(c.name ? `${c.name} (${c.client_id.slice(0, 8)})` : c.client_id, c.client_id)));
  if (!clients.length) { say("This token reads no client."); return; }
  await loadFleet();
}

function sparkline(values) {
  const width = 110, height = 26, max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `trend: ${values.join(", ")}`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2f6db5");
  line.setAttribute("stroke-width", "1.5");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

async function fillFleetTable(table, ranking) {
  const client = $("client").value;
  const rows = ranking.devices.map((d) => {
    const tr = row(cell(`${d.device_id.slice(0, 13)}…`, "", d.device_id), cell(d.value, "num"), cell(""));
    tr.dataset.device = d.device_id;
    tr.addEventListener("click", () => pickDevice(d.device_id));
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  await Promise.all(ranking.devices.map(async (d, i) => {
    const series = await api(`/v2/clients/${client}/analytics/devices/${d.device_id}/activity`, { ...range(), granularity: "daily" });
    rows[i].cells[2].append(sparkline(series.data.map((p) => p.value)));
  }));
}

async function loadFleet() {
  const client = $("client").value;
  if (!client) return;
  const path = `/v2/clients/${client}/analytics/devices`;
  const [most, least] = await Promise.all([
    api(path, { ...range(), order: "desc", limit: FLEET_SIZE }),
    api(path, { ...range(), order: "asc", limit: FLEET_SIZE }),
  ]);
  $("fleet-summary").textContent = `${most.total_devices} devices · ${most.label.toLowerCase()} from ${most.period.start} to ${most.period.end}`;
  await Promise.all([fillFleetTable($("fleet-most"), most), fillFleetTable($("fleet-least"), least)]);
  const known = most.devices.concat(least.devices).map((d) => d.device_id);
  await pickDevice(known.includes(state.device) ? state.device : known[0]);
}

function drawChart(body) {
  const x = body.data.map((_, i) => i);
  const now = body.data.map((p) => p.value);
  const before = body.previous ? body.data.map((_, i) => (body.previous.data[i] ? body.previous.data[i].value : null)) : [];
  const dates = body.data.map((p) => p.date);
  const width = Math.max(280, $("chart").clientWidth || 600);
  const options = {
    width,
    height: 240,
    scales: { x: { time: false } },
    axes: [
      { values: (_, ticks) => ticks.map((t) => dates[t] || ""), space: 70 },
      { size: 50 },
    ],
    series: [
      { label: "Date", value: (_, i) => (i === null ? "–" : dates[i] || "") },
      { label: body.label, stroke: "#2f6db5", width: 2, points: { show: true } },
      { label: "Previous period", stroke: "#a9c1de", width: 2, dash: [6, 4] },
    ],
  };
  if (state.plot) state.plot.destroy();
  state.plot = new uPlot(options, [x, now, before], $("chart"));
}

function fillSeriesTable(body) {
  const rows = body.data.map((p, i) => {
    const prev = body.previous && body.previous.data[i];
    return row(cell(p.date), cell(p.value, "num"), cell(prev ? prev.date : ""), cell(prev ? prev.value : "", "num"));
  });
  $("series-table").tBodies[0].replaceChildren(...rows);
}

async function loadSeries() {
  const client = $("client").value;
  if (!state.device) return;
  const body = await api(`/v2/clients/${client}/analytics/devices/${state.device}/activity`, {
    ...range(), granularity: $("granularity").value, compare: "previous_period",
  });
  const change = body.change === null ? "no previous activity" : `${(body.change * 100).toFixed(1)}% against the previous period`;
  $("totals").textContent = `Total ${body.total} · previous ${body.previous.total} · ${change}`;
  drawChart(body);
  fillSeriesTable(body);
}

async function pickDevice(device) {
  state.device = device;
  for (const row of document.querySelectorAll(".fleet-table tbody tr")) {
    row.classList.toggle("selected", row.dataset.device === device);
  }
  $("device-title").textContent = device ? `Device ${device}` : "Pick a device from the fleet table";
  if (!device) return;
  await loadSeries();
  startLive();
}

// Today's point, pushed by the server (Server-Sent Events read through fetch: EventSource
// cannot send the Authorization header). A stream that ends or fails is opened again after a
// growing, jittered wait (1 s doubling to 60 s, reset once a point arrives), so that a server
// restart or a crowd of pages does not bring every page back at the same instant. A 401 or
// 403 (a token revoked or expired) stops it: retrying cannot help.
const LIVE_RETRY_FIRST_MS = 1000;
const LIVE_RETRY_MAX_MS = 60000;

async function startLive() {
  if (state.live) state.live.abort();
  const controller = new AbortController();
  state.live = controller;
  const client = $("client").value;
  const url = `/v2/clients/${client}/analytics/devices/${state.device}/activity/live?metric=${$("metric").value}`;
  let wait = LIVE_RETRY_FIRST_MS;
  while (!controller.signal.aborted) {
    let status = 0;
    try {
      const response = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal });
      status = response.status;
      if (status === 401 || status === 403) {
        say("Live updates stopped: the token is no longer valid for this client");
        return;
      }
      if (status === 200) {
        await readPoints(response, () => { wait = LIVE_RETRY_FIRST_MS; });
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    if (controller.signal.aborted) return;
    const delay = wait / 2 + Math.random() * wait / 2;
    say(`Live updates interrupted${status ? ` (${status})` : ""}; reconnecting in ${Math.round(delay / 1000)} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    wait = Math.min(wait * 2, LIVE_RETRY_MAX_MS);
  }
}

async function readPoints(response, onPoint) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const point = JSON.parse(line.slice(5));
      $("live-value").textContent = point.value;
      $("live-date").textContent = point.date;
      if ($("message").textContent.startsWith("Live updates")) say("");
      onPoint();
    }
  }
}

async function refresh() {
  try { await loadFleet(); } catch (error) { say(error.message); }
}

function init() {
  const today = new Date();
  $("end").value = isoDay(today);
  $("start").value = isoDay(new Date(today.getTime() - 29 * 86400000));
  $("token").value = state.token;
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    try { await loadClients(); } catch (error) { say(error.message); }
  });
  $("client").addEventListener("change", () => { state.device = null; refresh(); });
  for (const id of ["metric", "start", "end"]) $(id).addEventListener("change", refresh);
  $("granularity").addEventListener("change", () => loadSeries().catch((e) => say(e.message)));
  if (state.token) loadClients().catch((error) => say(error.message));
}

init();
