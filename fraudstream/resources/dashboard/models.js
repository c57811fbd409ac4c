// The models page: champion against shadow challenger, CP@k per day drawn as inline SVG,
// the table of both models and the verdict. Data is only put into the page as text.
"use strict";

// The service recomputes at most once a minute; asking more often shows nothing new.
const REFRESH_MS = 60000;
const SVG = "http://www.w3.org/2000/svg";
const MODELS = ["champion", "challenger"];
const TIERS = ["approve", "review", "decline"];
// The chart's plot area inside its viewBox (760 x 320): room for the legend above,
// the y ticks to the left and the days and axis label below.
const PLOT = { left: 64, right: 740, top: 44, bottom: 262 };

const $ = (id) => document.getElementById(id);
let currentWinner = null; // its table row is marked

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

const fixed = (x, digits) =>
  x.toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });

// The top of the y axis: the highest CP@k with some room, up to the next 0.05.
function yTop(points) {
  const highest = Math.max(0, ...points.flatMap((p) => MODELS.map((m) => p[m])));
  return Math.min(1, Math.max(0.05, Math.ceil(highest * 1.1 * 20) / 20));
}

function drawChart(body) {
  const svg = $("cp-chart");
  const points = body.card_precision_per_day;
  const top = yTop(points);
  const width = PLOT.right - PLOT.left;
  const height = PLOT.bottom - PLOT.top;
  const x = (i) => PLOT.left + (points.length > 1 ? (i * width) / (points.length - 1) : width / 2);
  const y = (v) => PLOT.bottom - (v / top) * height;
  const parts = [];

  for (let i = 0; i <= 4; i++) {
    const value = (top * i) / 4;
    parts.push(svgEl("line", { class: "grid", x1: PLOT.left, x2: PLOT.right, y1: y(value), y2: y(value) }),
      svgEl("text", { class: "tick y", x: PLOT.left - 8, y: y(value) + 4 }, fixed(value, 2)));
  }
  parts.push(svgEl("line", { class: "axis", x1: PLOT.left, x2: PLOT.right, y1: PLOT.bottom, y2: PLOT.bottom }),
    svgEl("line", { class: "axis", x1: PLOT.left, x2: PLOT.left, y1: PLOT.top, y2: PLOT.bottom }));
  // Every day's label while they fit; past two weeks, every other one.
  const every = points.length > 14 ? 2 : 1;
  points.forEach((p, i) => {
    if (i % every === 0) {
      parts.push(svgEl("text", { class: "tick x", x: x(i), y: PLOT.bottom + 18 }, p.day.slice(5)));
    }
  });
  parts.push(
    svgEl("text", { class: "axis-label x", x: PLOT.left + width / 2, y: PLOT.bottom + 44 }, "day (UTC)"),
    svgEl("text", {
      class: "axis-label y", x: 16, y: PLOT.top + height / 2,
      transform: `rotate(-90 16 ${PLOT.top + height / 2})`,
    }, "CP@" + body.k + " of the day"));

  for (const model of MODELS) {
    const coords = points.map((p, i) => `${x(i).toFixed(1)},${y(p[model]).toFixed(1)}`);
    parts.push(svgEl("polyline", { class: "series " + model, points: coords.join(" ") }));
    points.forEach((p, i) => {
      const dot = svgEl("circle", { class: "point " + model, cx: x(i), cy: y(p[model]), r: 3.5 });
      dot.append(svgEl("title", {}, `${p.day}: ${model} CP@${body.k} ${fixed(p[model], 4)}`));
      parts.push(dot);
    });
  }

  MODELS.forEach((model, n) => {
    const left = PLOT.left + 10 + n * 220;
    const legend = svgEl("g", { class: "legend-item " + model });
    legend.append(svgEl("line", { class: "series " + model, x1: left, x2: left + 26, y1: 18, y2: 18 }),
      svgEl("text", { x: left + 32, y: 22 }, `${model} v${body[model].version}`));
    parts.push(legend);
  });
  svg.replaceChildren(...parts);
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
