// Line charts of values by day, drawn as inline SVG (the models and model-health
// pages), and the element helpers of every page with data. Data is only put into the
// page as text or attributes.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// A chart's plot area inside its viewBox (760 x 320): room for the legend above, the
// y ticks to the left and the days and axis label below.
const PLOT = { left: 64, right: 740, top: 44, bottom: 262 };
// Legend items per row, and the room each takes.
const LEGEND_PER_ROW = 3;
const LEGEND_WIDTH = 225;

const $ = (id) => document.getElementById(id);

// An element with text (never markup) and a class.
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

// A round top for a y axis of four ticks above the highest value: 4 x 1, 2, 2.5 or 5 x 10^n.
function niceTop(highest) {
  if (!(highest > 0)) return 1;
  const rough = (highest * 1.1) / 4;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return step * 4;
}

// The runs of consecutive days that have a value: a missing day breaks the line.
function runs(values) {
  const found = [];
  let current = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (current.length) found.push(current);
      current = [];
    } else {
      current.push(i);
    }
  });
  if (current.length) found.push(current);
  return found;
}

// Draw spec into svg:
//   days: ISO dates along x; top: the y axis' top; digits: decimals of the y ticks;
//   yLabel: the y axis' label;
//   series: [{cls, label (legend), values (one a day, null where none), title(i, v)}];
//   bands: [{from, to, label}], day indexes shaded (immature days, say);
//   rules: [{value, cls, label}], horizontal lines (a threshold).
function lineChart(svg, spec) {
  const days = spec.days;
  const top = spec.top;
  const width = PLOT.right - PLOT.left;
  const height = PLOT.bottom - PLOT.top;
  const step = days.length > 1 ? width / (days.length - 1) : width;
  const x = (i) => PLOT.left + (days.length > 1 ? i * step : width / 2);
  const y = (v) => PLOT.bottom - (Math.min(v, top) / top) * height;
  const parts = [];

  for (const band of spec.bands || []) {
    const left = Math.max(PLOT.left, x(band.from) - step / 2);
    const right = Math.min(PLOT.right, x(band.to) + step / 2);
    parts.push(svgEl("rect", { class: "band", x: left, y: PLOT.top, width: right - left, height }),
      // Ended at the band's right edge: a band of the newest days stays readable.
      svgEl("text", { class: "band-label", x: right - 4, y: PLOT.top + 14 }, band.label));
  }
  for (let i = 0; i <= 4; i++) {
    const value = (top * i) / 4;
    parts.push(svgEl("line", { class: "grid", x1: PLOT.left, x2: PLOT.right, y1: y(value), y2: y(value) }),
      svgEl("text", { class: "tick y", x: PLOT.left - 8, y: y(value) + 4 }, fixed(value, spec.digits)));
  }
  parts.push(svgEl("line", { class: "axis", x1: PLOT.left, x2: PLOT.right, y1: PLOT.bottom, y2: PLOT.bottom }),
    svgEl("line", { class: "axis", x1: PLOT.left, x2: PLOT.left, y1: PLOT.top, y2: PLOT.bottom }));
  // Every day's label while they fit (two weeks); past that, evenly spaced ones.
  const every = Math.max(1, Math.ceil(days.length / 14));
  days.forEach((day, i) => {
    if (i % every === 0) {
      parts.push(svgEl("text", { class: "tick x", x: x(i), y: PLOT.bottom + 18 }, day.slice(5)));
    }
  });
  parts.push(
    svgEl("text", { class: "axis-label x", x: PLOT.left + width / 2, y: PLOT.bottom + 44 }, "day (UTC)"),
    svgEl("text", {
      class: "axis-label y", x: 16, y: PLOT.top + height / 2,
      transform: `rotate(-90 16 ${PLOT.top + height / 2})`,
    }, spec.yLabel));

  for (const rule of spec.rules || []) {
    const line = svgEl("line", { class: "rule " + rule.cls, x1: PLOT.left, x2: PLOT.right, y1: y(rule.value), y2: y(rule.value) });
    line.append(svgEl("title", {}, rule.label));
    parts.push(line);
  }
  // Dots only when there is room for them.
  const dots = days.length <= 120;
  for (const series of spec.series) {
    for (const run of runs(series.values)) {
      const coords = run.map((i) => `${x(i).toFixed(1)},${y(series.values[i]).toFixed(1)}`);
      parts.push(svgEl("polyline", { class: "series " + series.cls, points: coords.join(" ") }));
    }
    series.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const dot = svgEl("circle", { class: "point " + series.cls, cx: x(i), cy: y(v), r: dots ? 3.5 : 0 });
      dot.append(svgEl("title", {}, series.title(i, v)));
      parts.push(dot);
    });
  }

  spec.series.forEach((series, n) => {
    const left = PLOT.left + 10 + (n % LEGEND_PER_ROW) * LEGEND_WIDTH;
    const row = 18 + Math.floor(n / LEGEND_PER_ROW) * 16;
    const legend = svgEl("g", { class: "legend-item " + series.cls });
    legend.append(svgEl("line", { class: "series " + series.cls, x1: left, x2: left + 26, y1: row, y2: row }),
      svgEl("text", { x: left + 32, y: row + 4 }, series.label));
    parts.push(legend);
  });
  svg.replaceChildren(...parts);
}
