// Small SVG time-series plots for the chart panel: one line per series, a point per record,
// the reference range as a band. Our own few lines of SVG instead of a charting library,
// so the page makes no request beyond our API.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SERIES_COLORS = ["#175cd3", "#c11574", "#067647", "#b54708"];

function svgEl(name, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

// Round tick values (1, 2, 5 x 10^n) covering [lo, hi].
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

function readableUnit(unit) {
  return ({ "mm[Hg]": "mmHg", Cel: "°C", "{score}": "" })[unit] ?? unit.replace(/[{}]/g, "");
}

function formatNumber(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : String(+v.toFixed(2));
}

function plotDomain(trend) {
  const times = [], values = [];
  for (const s of trend.series) {
    for (const p of s.points) { times.push(Date.parse(p.date)); values.push(p.value); }
    for (const b of [s.low, s.high]) if (b !== null && b !== undefined) values.push(b);
  }
  let [t0, t1] = [Math.min(...times), Math.max(...times)];
  if (t0 === t1) { t0 -= 864e5 * 30; t1 += 864e5 * 30; }
  let [v0, v1] = [Math.min(...values), Math.max(...values)];
  const pad = (v1 - v0) * 0.08 || Math.abs(v0) * 0.1 || 1;
  return { t0, t1, v0: v0 - pad, v1: v1 + pad };
}

function timeLabel(t, span) {
  const iso = new Date(t).toISOString();
  return span > 3 * 365 * 864e5 ? iso.slice(0, 4) : span > 120 * 864e5 ? iso.slice(0, 7) : iso.slice(0, 10);
}

function drawAxes(svg, d, box, x, y) {
  for (const v of niceTicks(d.v0, d.v1, 5)) {
    svg.append(svgEl("line", { x1: box.l, x2: box.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: box.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, formatNumber(v)));
  }
  const span = d.t1 - d.t0;
  const n = Math.max(2, Math.min(6, Math.floor((box.r - box.l) / 90)));
  for (let i = 0; i <= n; i++) {
    const t = d.t0 + (span * i) / n;
    const anchor = i === 0 ? "start" : i === n ? "end" : "middle";
    svg.append(svgEl("text", { x: x(t), y: box.b + 16, class: "tick", "text-anchor": anchor }, timeLabel(t, span)));
  }
  svg.append(svgEl("line", { x1: box.l, x2: box.r, y1: box.b, y2: box.b, class: "axis" }));
}

// Draw `trend` (the /trend endpoint's JSON) into `container`; `onPoint(ref)` on a click.
function drawTrend(container, trend, onPoint, highlightRef = null) {
  const width = Math.max(260, container.clientWidth || 480);
  const height = 190;
  const box = { l: 44, r: width - 10, t: 10, b: height - 26 };
  const d = plotDomain(trend);
  const x = (t) => box.l + ((t - d.t0) / (d.t1 - d.t0)) * (box.r - box.l);
  const y = (v) => box.b - ((v - d.v0) / (d.v1 - d.v0)) * (box.b - box.t);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `${trend.label}: ${trend.records} results` });
  trend.series.forEach((s, i) => {
    if (s.low === null && s.high === null) return;
    const top = y(s.high ?? d.v1), bottom = y(s.low ?? d.v0);
    svg.append(svgEl("rect", { x: box.l, y: top, width: box.r - box.l, height: Math.max(0, bottom - top),
      class: "band", fill: SERIES_COLORS[i % SERIES_COLORS.length] }));
  });
  drawAxes(svg, d, box, x, y);
  trend.series.forEach((s, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length];
    const path = s.points.map((p, k) => `${k ? "L" : "M"}${x(Date.parse(p.date)).toFixed(1)},${y(p.value).toFixed(1)}`);
    svg.append(svgEl("path", { d: path.join(""), class: "line", stroke: color }));
    for (const p of s.points) {
      const dot = svgEl("circle", { cx: x(Date.parse(p.date)), cy: y(p.value), r: p.ref === highlightRef ? 6 : 3.5,
        class: "point" + (p.ref === highlightRef ? " cited" : ""), fill: color, "data-ref": p.ref, "data-series": s.code });
      dot.append(svgEl("title", {}, `${p.date.slice(0, 10)}  ${s.label} ${formatNumber(p.value)} ${readableUnit(s.unit)}`));
      dot.addEventListener("click", () => onPoint(p.ref));
      svg.append(dot);
    }
  });
  container.replaceChildren(svg);
}

function rangeText(s) {
  if (s.low === null && s.high === null) return "";
  const range = s.high === null ? "≥ " + formatNumber(s.low) : s.low === null ? "≤ " + formatNumber(s.high)
    : formatNumber(s.low) + "–" + formatNumber(s.high);
  return ` · ${s.range_source === "record" ? "lab range" : "typical adult range"} ${range}`;
}

function trendLegend(trend) {
  return trend.series.map((s, i) => ({
    color: SERIES_COLORS[i % SERIES_COLORS.length],
    text: `${s.label}${readableUnit(s.unit) ? " (" + readableUnit(s.unit) + ")" : ""}, ${s.points.length} results${rangeText(s)}`,
  }));
}
