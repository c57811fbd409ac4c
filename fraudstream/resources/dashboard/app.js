// The ops dashboard's page: alerts pushed by server-sent events, newest first.
// Data is only ever put into the page as text (textContent), never as HTML. The element
// helpers ($, el, svgEl) are chart.js's.
"use strict";

// Rows kept on the page as new ones arrive; older ones stay reachable by paging.
let rowsMax = 1000;
const rows = new Map(); // alert_id -> {alert, tr}
let selected = null;
let oldestCursor = null;

const tbody = document.querySelector("#alerts tbody");

const money = (a) =>
  a.amount.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) +
  (a.currency ? " " + a.currency : "");
const when = (iso) => iso.replace("T", " ").slice(0, 19);

function alertRow(a) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = a.alert_id;
  tr.dataset.cursor = a.cursor;
  if (a.verdict) tr.dataset.verdict = a.verdict;
  tr.append(el("td", when(a.event_time)), el("td", a.card_id, "card"), el("td", money(a), "num"));
  const merchant = el("td", a.merchant_id);
  merchant.append(el("div", a.merchant_category || "no category", "muted"));
  tr.append(merchant);
  const score = el("td", null, "num");
  score.append(el("span", a.score.toFixed(2), "score"),
    el("div", a.decision + " · thr " + a.threshold.toFixed(2), "muted decision-" + a.decision));
  tr.append(score, el("td", a.model_name + " v" + a.model_version));
  const why = el("td", a.reasons[0] || "no reason given", "why");
  if (a.reasons.length > 1) why.append(el("span", " · +" + (a.reasons.length - 1) + " more", "more"));
  tr.append(why);
  tr.addEventListener("click", () => showDetail(a.alert_id));
  return tr;
}

// Insert alerts in cursor order (cursor: when the alert reached the topic), skipping repeats.
function addAlerts(alerts, fresh) {
  for (const a of alerts) {
    if (rows.has(a.alert_id)) continue;
    const tr = alertRow(a);
    if (fresh) tr.classList.add("fresh");
    let before = null;
    for (const other of tbody.children) {
      if (other.dataset.cursor < a.cursor) { before = other; break; }
    }
    tbody.insertBefore(tr, before);
    rows.set(a.alert_id, { alert: a, tr });
  }
  while (tbody.children.length > rowsMax) {
    const last = tbody.lastElementChild;
    rows.delete(last.dataset.alertId);
    last.remove();
  }
  const last = tbody.lastElementChild;
  oldestCursor = last ? last.dataset.cursor : null;
  $("empty").hidden = rows.size > 0;
}

function replaceAll(alerts) {
  tbody.replaceChildren();
  rows.clear();
  addAlerts(alerts, false);
  $("older").hidden = alerts.length === 0;
  if (selected && rows.has(selected)) rows.get(selected).tr.classList.add("selected");
}

function fillList(id, counts) {
  const list = $(id);
  list.replaceChildren();
  for (const [name, n] of Object.entries(counts)) {
    const li = el("li", null);
    li.append(el("span", name), el("b", n.toLocaleString("en")));
    list.append(li);
  }
}

function showStats(s) {
  $("per-minute-now").textContent = s.per_minute[0].toLocaleString("en");
  $("in-window").textContent = s.in_window.toLocaleString("en");
  $("duplicates").textContent = s.duplicates.toLocaleString("en");
  $("malformed").textContent = s.malformed.toLocaleString("en");
  $("malformed").title = s.last_malformed_reason || "";
  for (const d of ["review", "decline"]) {
    $("decisions-today-" + d).textContent = s.decisions_today[d].toLocaleString("en");
    $("decisions-window-" + d).textContent = s.decisions[d].toLocaleString("en");
  }
  $("today").textContent = s.today;
  fillList("by-category", s.by_category);
  fillList("by-model-version", s.by_model_version);
  const spark = $("per-minute");
  spark.replaceChildren();
  const top = Math.max(1, ...s.per_minute);
  const n = s.per_minute.length;
  s.per_minute.forEach((count, age) => {
    const h = (count / top) * 38;
    const rect = svgEl("rect", { x: ((n - 1 - age) * 300) / n, y: 40 - h, width: 300 / n - 1, height: h });
    rect.append(svgEl("title", {}, count + " alerts, " + age + " min ago"));
    spark.append(rect);
  });
}

// --- detail ---------------------------------------------------------------------

async function showDetail(alertId) {
  const entry = rows.get(alertId);
  if (!entry) return;
  const a = entry.alert;
  if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove("selected");
  selected = alertId;
  entry.tr.classList.add("selected");
  $("detail").hidden = false;
  $("d-alert-id").textContent = a.alert_id.slice(0, 12);
  const fields = $("d-fields");
  fields.replaceChildren();
  for (const [name, value] of [
    ["card", a.card_id], ["payment time", when(a.event_time) + " UTC"],
    ["scored", when(a.scored_time) + " UTC"], ["amount", money(a)],
    ["merchant", a.merchant_id + (a.merchant_category ? " (" + a.merchant_category + ")" : "")],
    ["country", a.country || "unknown"],
    ["score", a.score.toFixed(3) + " (threshold " + a.threshold.toFixed(3) + ")"],
    ["decision", a.decision],
    ["model", a.model_name + " v" + a.model_version], ["transaction", a.transaction_id],
  ]) fields.append(el("dt", name), el("dd", value));
  const reasons = $("d-reasons");
  reasons.replaceChildren(...a.reasons.map((r) => el("li", r)));
  showVerdict(a.verdict);
  $("verdict-status").textContent = "";
  $("trail").replaceChildren();
  $("trail-note").textContent = "loading the card's trail…";
  document.querySelector("#trail-table tbody").replaceChildren();
  try {
    const response = await fetch("/api/alerts/" + encodeURIComponent(alertId) + "/trail");
    const body = await response.json();
    if (selected !== alertId) return;
    if (!response.ok) throw new Error(body.error || response.statusText);
    drawTrail(body, a);
  } catch (error) {
    $("trail-note").textContent = "No trail: " + error.message;
  }
}

function drawTrail(body, a) {
  $("d-limit").textContent = body.impossible_speed_kmh.toLocaleString("en");
  const svg = $("trail");
  const points = body.points.filter((p) => p.lat !== null && p.lon !== null);
  const table = document.querySelector("#trail-table tbody");
  for (const p of body.points.slice().reverse()) {
    const tr = el("tr");
    if (p.impossible) tr.className = "impossible";
    tr.append(el("td", when(p.event_time)), el("td", (p.country || "?") + " " + p.merchant_id),
      el("td", p.channel || "?"),
      el("td", p.km_from_previous === null ? "" : Math.round(p.km_from_previous).toLocaleString("en"), "num"),
      el("td", p.speed_kmh === null ? "" : Math.round(p.speed_kmh).toLocaleString("en"), "num"));
    table.append(tr);
  }
  if (points.length === 0) {
    $("trail-note").textContent = "No card locations of this card in the lake.";
    return;
  }
  const impossible = body.points.filter((p) => p.impossible).length;
  $("trail-note").textContent = points.length + " locations" +
    (impossible ? ", " + impossible + " impossible leg" + (impossible > 1 ? "s" : "") : "") + ".";
  // Longitude and latitude as x and y, scaled to fit, with a margin; a plot, not a map.
  const lats = points.map((p) => p.lat), lons = points.map((p) => p.lon);
  const minLat = Math.min(...lats), maxLat = Math.max(...lats);
  const minLon = Math.min(...lons), maxLon = Math.max(...lons);
  const spanLat = Math.max(maxLat - minLat, 0.5), spanLon = Math.max(maxLon - minLon, 0.5);
  const scale = Math.min(380 / spanLon, 250 / spanLat);
  const cx = (minLon + maxLon) / 2, cy = (minLat + maxLat) / 2;
  const x = (p) => 210 + (p.lon - cx) * scale, y = (p) => 150 - (p.lat - cy) * scale;
  svg.append(svgEl("text", { x: 4, y: 12 }, "lat " + maxLat.toFixed(1) + "°, lon " + minLon.toFixed(1) + "°"));
  svg.append(svgEl("text", { x: 300, y: 295 }, "lat " + minLat.toFixed(1) + "°, lon " + maxLon.toFixed(1) + "°"));
  // A leg joins a card-present payment to the previous one, as speed_kmh measures it.
  const present = points.filter((p) => p.card_present);
  for (let i = 1; i < present.length; i++) {
    const from = present[i - 1], to = present[i];
    const leg = svgEl("line", { x1: x(from), y1: y(from), x2: x(to), y2: y(to),
      class: "leg" + (to.impossible ? " impossible" : "") });
    leg.append(svgEl("title", {}, Math.round(to.speed_kmh) + " km/h"));
    svg.append(leg);
    if (to.impossible) {
      svg.append(svgEl("text", { x: (x(from) + x(to)) / 2 + 4, y: (y(from) + y(to)) / 2 - 4,
        class: "speed" }, Math.round(to.speed_kmh).toLocaleString("en") + " km/h"));
    }
  }
  for (const p of points) {
    const isAlert = p.event_time === a.event_time;
    const dot = svgEl("circle", { cx: x(p), cy: y(p), r: isAlert ? 6 : 3.5,
      class: "point" + (isAlert ? " alerted" : "") });
    dot.append(svgEl("title", {}, when(p.event_time) + " " + (p.country || "")));
    svg.append(dot);
  }
}

// --- verdicts --------------------------------------------------------------------

function showVerdict(label) {
  $("mark-fraud").setAttribute("aria-pressed", String(label === "fraud"));
  $("mark-genuine").setAttribute("aria-pressed", String(label === "genuine"));
}

function applyVerdict(alertId, label) {
  const entry = rows.get(alertId);
  if (!entry) return;
  entry.alert.verdict = label;
  entry.tr.dataset.verdict = label;
  if (selected === alertId) showVerdict(label);
}

async function sendVerdict(label) {
  const alertId = selected;
  if (!alertId) return;
  $("verdict-status").textContent = "sending…";
  try {
    await send("/api/alerts/" + encodeURIComponent(alertId) + "/verdict", { label });
    applyVerdict(alertId, label);
    if (selected === alertId) $("verdict-status").textContent = "Sent: " + label + ".";
  } catch (error) {
    if (selected === alertId) $("verdict-status").textContent = "Not sent: " + error.message;
  }
}

$("mark-fraud").addEventListener("click", () => sendVerdict("fraud"));
$("mark-genuine").addEventListener("click", () => sendVerdict("genuine"));
$("close-detail").addEventListener("click", () => {
  $("detail").hidden = true;
  if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove("selected");
  selected = null;
});

$("older").addEventListener("click", async () => {
  if (!oldestCursor) return;
  const response = await fetch("/api/alerts?limit=100&before=" + encodeURIComponent(oldestCursor));
  const body = await response.json();
  // Paging back lifts the cap for what the analyst asked to see.
  rowsMax = Math.max(rowsMax, tbody.children.length + body.alerts.length);
  for (const a of body.alerts) {
    if (rows.has(a.alert_id)) continue;
    const tr = alertRow(a);
    tbody.append(tr);
    rows.set(a.alert_id, { alert: a, tr });
  }
  const last = tbody.lastElementChild;
  oldestCursor = last ? last.dataset.cursor : null;
  $("older").hidden = !body.more;
});

// --- the live stream: EventSource reconnects by itself after a service restart ----

function connect() {
  const source = new EventSource("/api/stream");
  const state = $("connection");
  source.addEventListener("open", () => { state.dataset.state = "live"; state.textContent = "live"; });
  source.addEventListener("error", () => {
    state.dataset.state = "down";
    state.textContent = "reconnecting…";
    // A stream refused for want of a session is not retried by the browser: find out
    // (an ended login goes to the login page), then connect again.
    if (source.readyState === EventSource.CLOSED) {
      whoAmI().then(connect, () => setTimeout(connect, 2000));
    }
  });
  source.addEventListener("snapshot", (e) => replaceAll(JSON.parse(e.data).alerts));
  source.addEventListener("alerts", (e) => addAlerts(JSON.parse(e.data).alerts, true));
  source.addEventListener("stats", (e) => showStats(JSON.parse(e.data)));
  source.addEventListener("verdict", (e) => {
    const v = JSON.parse(e.data);
    applyVerdict(v.alert_id, v.label);
  });
}
connect();
