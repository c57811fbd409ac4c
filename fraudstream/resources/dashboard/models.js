// The models page: champion against shadow challenger, CP@k per day drawn as inline SVG
// (chart.js), the table of both models and the verdict. Data is only put into the page as text.
"use strict";

// The service recomputes at most once a minute; asking more often shows nothing new.
const REFRESH_MS = 60000;
const MODELS = ["champion", "challenger"];
const TIERS = ["approve", "review", "decline"];

let currentWinner = null; // its table row is marked

// The top of the y axis: the highest CP@k with some room, up to the next 0.05.
function yTop(points) {
  const highest = Math.max(0, ...points.flatMap((p) => MODELS.map((m) => p[m])));
  return Math.min(1, Math.max(0.05, Math.ceil(highest * 1.1 * 20) / 20));
}

function drawChart(body) {
  const points = body.card_precision_per_day;
  lineChart($("cp-chart"), {
    days: points.map((p) => p.day),
    top: yTop(points),
    digits: 2,
    yLabel: "CP@" + body.k + " of the day",
    series: MODELS.map((model) => ({
      cls: model,
      label: `${model} v${body[model].version}`,
      values: points.map((p) => p[model]),
      title: (i, v) => `${points[i].day}: ${model} CP@${body.k} ${fixed(v, 4)}`,
    })),
  });
}

function modelRow(name, metrics) {
  const tr = el("tr");
  tr.dataset.model = name;
  if (name === currentWinner) tr.classList.add("winner");
  tr.append(el("td", name, "model"), el("td", "v" + metrics.version, "version"),
    el("td", fixed(metrics.average_precision, 4), "num ap"),
    el("td", fixed(metrics.card_precision, 4), "num cp"),
    ...TIERS.map((t) => el("td", fixed(metrics.decisions_per_day[t], 1), "num " + t)));
  return tr;
}

function span(days) {
  return days.length === 1 ? days[0] : days[0] + ".." + days[days.length - 1];
}

function show(body) {
  currentWinner = body.winner;
  $("model-name").textContent = body.model_name;
  $("cp-header").textContent = "CP@" + body.k;
  $("verdict").textContent = "Verdict: " + body.reason + ".";
  $("verdict").dataset.winner = body.winner;
  drawChart(body);
  document.querySelector("#models tbody").replaceChildren(
    ...MODELS.map((m) => modelRow(m, body[m])));
  let line = `Compared on ${body.payments.toLocaleString("en")} payments of ` +
    `${body.days.length} days (${span(body.days)}), ${body.frauds.toLocaleString("en")} of ` +
    `them fraud as of ${body.as_of.replace("T", " ").slice(0, 16)} UTC.`;
  if (body.immature_days.length) {
    line += ` Left out as immature (labels take ${body.delay_days} days): ` +
      `${span(body.immature_days)}.`;
  }
  $("window").textContent = line;
  $("models-status").hidden = true;
  $("comparison").hidden = false;
}

async function load() {
  try {
    const response = await fetch("/api/models");
    const body = await response.json();
    if (!response.ok) {
      const lead = response.status === 404 ? "Nothing to compare yet: " : "No comparison: ";
      throw new Error(lead + (body.error || response.statusText));
    }
    show(body);
  } catch (error) {
    $("comparison").hidden = true;
    $("models-status").hidden = false;
    $("models-status").textContent = error.message;
  }
}

load();
setInterval(load, REFRESH_MS);
