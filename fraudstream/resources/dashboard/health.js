// The model-health page: what the monitor wrote day by day, as charts (chart.js) and
// tables, read from /api/model-health. Data is only put into the page as text.
"use strict";

// The monitor runs once a day; a few minutes' delay shows nothing older.
const REFRESH_MS = 300000;
const QUANTILES = [["score_p50", "p50"], ["score_p90", "p90"], ["score_p99", "p99"],
  ["score_p99_9", "p99_9"]];

const number = (x, digits) => (x === null ? "–" : fixed(x, digits));
const highest = (...lists) => Math.max(0, ...lists.flat().filter((v) => v !== null));

// Runs of consecutive immature days, shaded on the precision chart.
function immatureBands(days) {
  const bands = [];
  days.forEach((d, i) => {
    if (d.mature) return;
    const last = bands[bands.length - 1];
    if (last && last.to === i - 1) last.to = i;
    else bands.push({ from: i, to: i, label: "labels not in yet" });
  });
  return bands;
}

function drawCharts(body) {
  const days = body.days;
  const dates = days.map((d) => d.date);
  const column = (name) => days.map((d) => d[name]);
  const titled = (what, digits) => (i, v) => `${dates[i]}: ${what} ${fixed(v, digits)}`;

  const alerts = column("alerts");
  const limit = days.map((d) =>
    d.alerts_median_7d === null ? null : body.thresholds.volume_factor * d.alerts_median_7d);
  lineChart($("alerts-chart"), {
    days: dates, top: niceTop(highest(alerts, limit)), digits: 0, yLabel: "alerts",
    series: [
      { cls: "alerts", label: "alerts", values: alerts, title: titled("alerts", 0) },
      { cls: "limit", label: `${body.thresholds.volume_factor} × 7-day median`, values: limit,
        title: titled("volume threshold", 1) },
    ],
  });

  const quality = [["precision", "precision"], ["recall", "recall"],
    ["card_precision_at_k", "cp", "CP@" + body.k]];
  const qualitySeries = quality.map(([name, cls, label]) => ({
    cls, label: label || name, values: column(name), title: titled(label || name, 4),
  }));
  lineChart($("precision-chart"), {
    days: dates, digits: 2, yLabel: "of the day's alerts",
    top: Math.min(1, niceTop(highest(...qualitySeries.map((s) => s.values)))),
    series: qualitySeries, bands: immatureBands(days),
  });

  const scoreSeries = QUANTILES.map(([name, cls]) => ({
    cls, label: cls.replace("_", "."), values: column(name), title: titled("score " + cls.replace("_", "."), 4),
  }));
  lineChart($("scores-chart"), {
    days: dates, digits: 2, yLabel: "score",
    top: Math.min(1, niceTop(highest(...scoreSeries.map((s) => s.values)))),
    series: scoreSeries,
  });

  const drift = body.drift;
  const driftSeries = drift.features.map((name, n) => ({
    cls: "f" + n, label: name, values: drift.psi[name], title: titled(name + " PSI", 3),
  }));
  lineChart($("drift-chart"), {
    days: dates, digits: 2, yLabel: "PSI",
    top: niceTop(highest(...driftSeries.map((s) => s.values), [drift.threshold])),
    series: driftSeries,
    rules: [{ value: drift.threshold, cls: "psi", label: `PSI threshold ${drift.threshold}` }],
  });
}

function eventRow(event) {
  const tr = el("tr");
  tr.dataset.kind = event.kind;
  const digits = event.kind === "alert_volume" ? 0 : 3;
  tr.append(el("td", event.day), el("td", event.kind, "kind"), el("td", event.metric, "metric"),
    el("td", number(event.value, digits), "num value"),
    el("td", number(event.threshold, digits), "num threshold"),
    el("td", "v" + event.model_version), el("td", event.reason, "reason"));
  return tr;
}

function dayRow(day) {
  const tr = el("tr");
  tr.dataset.date = day.date;
  tr.dataset.mature = day.mature;
  const count = (x) => x.toLocaleString("en");
  tr.append(el("td", day.date), el("td", count(day.payments), "num"),
    el("td", count(day.alerts), "num alerts"), el("td", count(day.review), "num"),
    el("td", count(day.decline), "num"), el("td", day.mature ? "matured" : "not in yet", "labels"),
    el("td", number(day.precision, 4), "num precision"), el("td", number(day.recall, 4), "num recall"),
    el("td", number(day.card_precision_at_k, 4), "num cp"),
    el("td", number(day.score_p99, 4), "num"), el("td", "v" + day.model_version));
  return tr;
}

function show(body) {
  $("lake").textContent = body.lake;
  if (body.message) {
    $("health").hidden = true;
    $("health-status").hidden = false;
    $("health-status").textContent = body.message;
    return;
  }
  const days = body.days;
  const immature = days.filter((d) => !d.mature).length;
  $("health-window").textContent = `${days.length} days, ${days[0].date}..` +
    `${days[days.length - 1].date}; ${immature} of them immature (their labels are not in ` +
    `yet, so no precision); labels as of ${body.as_of.replace("T", " ").slice(0, 16)} UTC.`;
  $("cp-header").textContent = "CP@" + body.k;
  drawCharts(body);
  document.querySelector("#health-events tbody").replaceChildren(...body.events.map(eventRow));
  $("no-events").hidden = body.events.length > 0;
  document.querySelector("#health-days tbody").replaceChildren(
    ...days.slice().reverse().map(dayRow));
  $("health-status").hidden = true;
  $("health").hidden = false;
}

// The newest request's answer is the one shown: an older one arriving late is dropped.
let asked = 0;

async function load() {
  const request = ++asked;
  try {
    const response = await fetch("/api/model-health?days=" + $("days").value);
    const body = await response.json();
    if (request !== asked) return;
    if (!response.ok) throw new Error(body.error || response.statusText);
    show(body);
  } catch (error) {
    if (request !== asked) return;
    $("health").hidden = true;
    $("health-status").hidden = false;
    $("health-status").textContent = error.message;
  }
}

$("days").addEventListener("change", load);
load();
setInterval(load, REFRESH_MS);
