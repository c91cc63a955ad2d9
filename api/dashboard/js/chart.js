// Line charts against the step, drawn as inline SVG: a job's loss curves, and the compare view's curves.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 280;
const MARGIN = { top: 16, right: 20, bottom: 40, left: 56 };

function svg(tag, attrs = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

/** About `count` round tick values covering [low, high]. */
export function ticks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const values = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) values.push(+v.toFixed(10));
  return values;
}

function scales(series, totalSteps) {
  const points = series.flatMap((s) => s.points);
  const maxStep = Math.max(totalSteps || 0, ...points.map(([step]) => step), 1);
  const values = points.map(([, value]) => value);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || Math.abs(high) || 1; // a flat curve still gets a y range
  const top = high + span * 0.08;
  // Losses and rates stay above zero; a metric that goes negative (a reward margin) keeps its sign.
  const bottom = low >= 0 ? Math.max(0, low - span * 0.1) : low - span * 0.1;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  return {
    x: (step) => MARGIN.left + (step / maxStep) * plotW,
    y: (value) => MARGIN.top + (1 - (value - bottom) / (top - bottom || 1)) * plotH,
    xTicks: ticks(0, maxStep, 6).filter((t) => Number.isInteger(t)),
    yTicks: ticks(bottom, top, 5),
  };
}

function axes(root, scale, yLabel) {
  const grid = svg("g", { class: "grid" });
  for (const t of scale.yTicks) {
    const y = scale.y(t).toFixed(1);
    grid.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y }));
    grid.append(svg("text", { x: MARGIN.left - 8, y, "text-anchor": "end", dy: "0.32em" }, t.toPrecision(3)));
  }
  for (const t of scale.xTicks) {
    const x = scale.x(t).toFixed(1);
    grid.append(svg("text", { x, y: HEIGHT - MARGIN.bottom + 18, "text-anchor": "middle" }, String(t)));
  }
  grid.append(svg("text", { x: WIDTH / 2, y: HEIGHT - 4, "text-anchor": "middle", class: "axis-title" }, "step"));
  const label = svg("text", { class: "axis-title", transform: `translate(14 ${HEIGHT / 2}) rotate(-90)` }, yLabel);
  label.setAttribute("text-anchor", "middle");
  grid.append(label);
  root.append(grid);
}

/** A series' own colour and dash (compare view), else its class's (`curve-train`, `curve-valid`). */
function strokeOf({ color, dashed }) {
  return { ...(color ? { stroke: color } : {}), ...(dashed ? { "stroke-dasharray": "5 3" } : {}) };
}

function curve(root, scale, series) {
  const { name, label, points, color } = series;
  if (points.length === 0) return;
  const coords = points.map(([step, value]) => `${scale.x(step).toFixed(1)},${scale.y(value).toFixed(1)}`);
  root.append(svg("polyline", { class: `curve curve-${name}`, points: coords.join(" "), "data-series": name,
    ...strokeOf(series) }));
  if (points.length <= 60) {
    for (const [step, value] of points) {
      const dot = svg("circle", { class: `dot dot-${name}`, cx: scale.x(step), cy: scale.y(value), r: 3,
        ...(color ? { fill: color } : {}) });
      dot.append(svg("title", {}, `${label} ${value.toFixed(4)} at step ${step}`));
      root.append(dot);
    }
  }
}

function legend(series) {
  const list = document.createElement("div");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = `legend-item legend-${s.name}`;
    item.dataset.series = s.name;
    if (s.color) item.style.setProperty("--series-color", s.color);
    if (s.dashed) item.classList.add("dashed");
    const last = s.points[s.points.length - 1];
    item.textContent = last ? `${s.label} ${last[1].toFixed(4)} (step ${last[0]})` : `${s.label} —`;
    list.append(item);
  }
  return list;
}

/**
 * Draw `series` ([{ name, label, points: [[step, value], ...], color?, dashed? }]) into `container` with a
 * legend; the x axis runs to `totalSteps` when known. A series without `color` takes its `curve-<name>` style.
 */
export function drawChart(container, series, { totalSteps = null, yLabel = "loss", title = "", empty = "" } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "loss-chart", role: "img" });
  root.append(svg("title", {}, title));
  const drawn = series.filter((s) => s.points.length > 0);
  if (drawn.length === 0) {
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, empty));
  } else {
    const scale = scales(drawn, totalSteps);
    axes(root, scale, yLabel);
    for (const s of drawn) curve(root, scale, s);
  }
  container.replaceChildren(root, legend(series));
}

/** A job's training and validation loss (`series` named "train" and "valid"), up to `totalSteps`. */
export function drawLossChart(container, series, totalSteps) {
  drawChart(container, series, { totalSteps, title: "Training and validation loss by step",
    empty: "No metrics yet: the curve appears with the first training step" });
}
