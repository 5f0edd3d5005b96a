"use strict";
// Line charts as SVG for the dashboard, drawn here (no library, nothing fetched from elsewhere).
// Each line has its own dash pattern and marker as well as its colour, so colour is never the
// only way to tell them apart; each point's exact value is in its tooltip, and a table with
// every number follows each chart for screen readers.

const SVG = "http://www.w3.org/2000/svg";
const LINE_STYLES = [
  { color: "#1f5fa8", dash: "", marker: "circle" },
  { color: "#b8420f", dash: "6 3", marker: "square" },
  { color: "#2d7d2d", dash: "2 3", marker: "triangle" },
  { color: "#6b3fa0", dash: "8 3 2 3", marker: "diamond" },
  { color: "#8a6d00", dash: "1 2", marker: "circle" },
  { color: "#0f7c86", dash: "10 4", marker: "square" },
];

function svgEl(tag, attrs, ...kids) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const k of kids) if (k) n.append(k);
  return n;
}

function marker(kind, x, y, color) {
  const a = { fill: color, stroke: color };
  if (kind === "square") return svgEl("rect", { ...a, x: x - 3, y: y - 3, width: 6, height: 6 });
  if (kind === "triangle") return svgEl("polygon", { ...a, points: `${x},${y - 4} ${x - 4},${y + 3} ${x + 4},${y + 3}` });
  if (kind === "diamond") return svgEl("polygon", { ...a, points: `${x},${y - 4} ${x + 4},${y} ${x},${y + 4} ${x - 4},${y}` });
  return svgEl("circle", { ...a, cx: x, cy: y, r: 3 });
}

function niceMax(v) {
  if (v <= 5) return 5;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return v;
}

function stamp(t, step) {
  const iso = new Date(t * 1000).toISOString();
  return step === "Hour" ? iso.slice(5, 13).replace("T", " ") + ":00" : iso.slice(0, 10);
}

// A chart of `series` ([{name, label, values}]) over `starts` (Unix seconds); `unit` formats values.
function lineChart(id, title, starts, series, step, unit) {
  const fmt = unit || ((v) => String(v));
  const W = 640, H = 220, L = 56, R = 12, T = 12, B = 36;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  const top = niceMax(Math.max(1, ...all));
  const x = (i) => L + (starts.length <= 1 ? 0 : (i * (W - L - R)) / (starts.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": id + "-title" },
    svgEl("title", { id: id + "-title" }, title));
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#ddd" }),
      svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#444" }, fmt(Math.round(v))));
  }
  const ticks = Math.min(6, starts.length);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (starts.length - 1)) / (ticks - 1));
    const anchor = k === 0 ? "start" : k === ticks - 1 ? "end" : "middle";
    svg.append(svgEl("text", { x: x(i), y: H - 12, "text-anchor": anchor, "font-size": 11, fill: "#444" }, stamp(starts[i], step)));
  }
  series.forEach((s, n) => {
    const st = LINE_STYLES[n % LINE_STYLES.length];
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += (d && s.values[i - 1] !== null ? " L" : " M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
    });
    const g = svgEl("g", { class: "series", "data-series": s.name });
    if (d) g.append(svgEl("path", { d: d.trim(), fill: "none", stroke: st.color, "stroke-width": 2, "stroke-dasharray": st.dash }));
    s.values.forEach((v, i) => {
      if (v === null) return;
      const m = marker(st.marker, x(i), y(v), st.color);
      m.setAttribute("data-value", String(v));
      m.append(svgEl("title", {}, `${s.label}, ${stamp(starts[i], step)}: ${fmt(v)}`));
      g.append(m);
    });
    svg.append(g);
  });
  const legend = el("ul", { class: "legend" }, series.map((s, n) => {
    const st = LINE_STYLES[n % LINE_STYLES.length];
    const key = svgEl("svg", { width: 34, height: 12, "aria-hidden": "true" },
      svgEl("line", { x1: 0, x2: 34, y1: 6, y2: 6, stroke: st.color, "stroke-width": 2, "stroke-dasharray": st.dash }),
      marker(st.marker, 17, 6, st.color));
    return el("li", {}, key, " " + s.label);
  }));
  const numbers = el("details", {}, el("summary", {}, "The numbers"),
    el("table", { class: "chart-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Time (UTC)"), series.map((s) => el("th", { scope: "col" }, s.label)))),
      el("tbody", {}, starts.map((t, i) => el("tr", {}, el("th", { scope: "row" }, stamp(t, step)),
        series.map((s) => el("td", {}, s.values[i] === null ? "—" : fmt(s.values[i]))))))));
  return el("section", { id, class: "chart-box" }, el("h3", {}, title), svg, legend, numbers);
}
