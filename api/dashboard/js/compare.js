// The compare view: two or more jobs side by side. Their loss and evaluation curves on shared axes, and a
// table of method, adapter size, hyperparameters, trained tokens, time and speed; all from the jobs API.

import { fetchNew, request } from "./api.js";
import { drawChart } from "./chart.js";
import { TERMINAL, every, formatNumber, formatTime, h, notify, statusBadge } from "./dom.js";
import { lossSeries } from "./job.js";

const REFRESH_MS = 3000;
const COLORS = ["#3454d1", "#e07a1f", "#1f8a4c", "#c53030", "#6b46c1", "#0f8ea8", "#b7791f", "#4a5263"];
// Evaluation metrics first in this order when present; any other `eval_*` / `valid_*` metric follows.
const KNOWN_EVAL = ["eval_exact_match", "eval_contains", "valid_mean_token_accuracy"];
const NOT_EVAL = new Set(["valid_loss"]); // drawn with the training loss

/** Everything the view shows of one job: the job object, all its events (oldest first), its checkpoints. */
async function loadJob(id) {
  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  const [job, events, checkpoints] = await Promise.all([
    request(base), fetchNew(`${base}/events`, new Set()), request(`${base}/checkpoints?limit=100`)]);
  events.sort((a, b) => (a.id < b.id ? -1 : 1));
  return { job, events, checkpoints: checkpoints.data };
}

function metricRecords({ events, checkpoints }) {
  const records = events.filter((e) => e.type === "metrics" && e.data && typeof e.data.step === "number")
    .map((e) => e.data);
  return [...records, ...checkpoints.map((c) => ({ ...(c.metrics || {}), step: c.step_number }))];
}

/** The evaluation metrics any of `runs` reports (`eval_*`, `valid_*` but the loss), known ones first. */
export function evalMetricNames(runs) {
  const found = new Set();
  for (const run of runs) {
    for (const record of metricRecords(run)) {
      for (const [key, value] of Object.entries(record)) {
        if (/^(eval|valid)_/.test(key) && !NOT_EVAL.has(key) && typeof value === "number") found.add(key);
      }
    }
  }
  const known = KNOWN_EVAL.filter((name) => found.has(name));
  return [...known, ...[...found].filter((name) => !KNOWN_EVAL.includes(name)).sort()];
}

/** `[[step, value], ...]` of metric `name` in a run's metrics events and checkpoints, by step. */
export function metricPoints(run, name) {
  const byStep = new Map();
  for (const record of metricRecords(run)) {
    if (typeof record[name] === "number") byStep.set(record.step, record[name]);
  }
  return [...byStep.entries()].sort((a, b) => a[0] - b[0]);
}

function methodOf(job) {
  const type = (job.method && job.method.type) || "diablo";
  return { type, hp: ((job.method || {})[type] || {}).hyperparameters || {} };
}

/** The adapter's shape in a few characters: DiaBlo's blocks, LoRA's rank and alpha, DPO's beta. */
function adapterText({ type, hp }) {
  if (type === "lora") return `rank ${hp.rank}, alpha ${hp.alpha}`;
  const blocks = `N = ${hp.num_blocks}`;
  return type === "dpo" ? `${blocks}, beta ${hp.beta}` : blocks;
}

function hyperparametersText({ hp }) {
  const rate = typeof hp.learning_rate === "number" ? hp.learning_rate.toExponential(1) : hp.learning_rate;
  const steps = hp.max_steps ? ` · max ${hp.max_steps} steps` : "";
  return `${hp.n_epochs} epochs · batch ${hp.batch_size} · LR ${rate}${steps}`;
}

function lastData(events, key) {
  const found = events.filter((e) => e.data && typeof e.data[key] === "number");
  return found.length ? found[found.length - 1].data[key] : null;
}

/** One job's column of the table: the values of the rows below, by row key. */
export function summaryOf(run) {
  const { job, events } = run;
  const method = methodOf(job);
  const seconds = job.started_at && job.finished_at ? job.finished_at - job.started_at : null;
  const [train, valid] = lossSeries(events, run.checkpoints).map((s) => s.points);
  const speed = lastData(events, "tokens_per_second");
  return {
    status: statusBadge(job.status),
    method: method.type,
    adapter: adapterText(method),
    parameters: lastData(events, "trainable_parameters"),
    hyperparameters: hyperparametersText(method),
    targets: (method.hp.target_modules || []).join(", "),
    tokens: job.trained_tokens,
    time: seconds,
    speed: speed === null ? null : Math.round(speed),
    train: train.length ? train[train.length - 1][1] : null,
    valid: valid.length ? Math.min(...valid.map(([, loss]) => loss)) : null,
  };
}

const ROWS = [
  ["status", "Status"],
  ["method", "Method"],
  ["adapter", "Adapter"],
  ["parameters", "Trainable parameters", (v) => v.toLocaleString("en-US")],
  ["hyperparameters", "Epochs · batch · learning rate"],
  ["targets", "Target modules"],
  ["tokens", "Trained tokens", (v) => v.toLocaleString("en-US")],
  ["time", "Time (start to finish)", (v) => `${v} s`],
  ["speed", "Tokens/s (training steps)", (v) => v.toLocaleString("en-US")],
  ["train", "Final training loss", (v) => formatNumber(v)],
  ["valid", "Lowest validation loss", (v) => formatNumber(v)],
];

function jobHead(run, index) {
  return h("th", { dataset: { jobId: run.job.id } },
    h("span", { class: "swatch", style: `background: ${COLORS[index % COLORS.length]}` }),
    h("a", { href: `#/jobs/${run.job.id}`, class: "mono" }, run.job.id),
    h("div", { class: "mono small muted" }, run.job.fine_tuned_model || "no model yet"));
}

function comparisonTable(runs, evalNames) {
  const columns = runs.map(summaryOf);
  const metricRows = evalNames.map((name) => {
    const values = runs.map((run) => {
      const points = metricPoints(run, name);
      return points.length ? points[points.length - 1][1] : null;
    });
    return h("tr", { dataset: { row: name } }, h("th", {}, `Last ${name}`),
      values.map((v) => h("td", {}, formatNumber(v))));
  });
  return h("table", { class: "table compare-table", id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), runs.map(jobHead))),
    h("tbody", {},
      ROWS.map(([key, title, format]) => h("tr", { dataset: { row: key } }, h("th", {}, title),
        columns.map((column) => {
          const value = column[key];
          const shown = value === null || value === undefined || value === "" ? "—"
            : format && typeof value === "number" ? format(value) : value;
          return h("td", {}, shown);
        }))),
      metricRows));
}

function chartCard(id, title, series, yLabel) {
  const chart = h("div", { class: "chart", id });
  drawChart(chart, series, { yLabel, title, empty: "No values yet" });
  return h("section", { class: "card" }, h("h2", {}, title), chart);
}

function lossCurves(runs) {
  return runs.flatMap((run, i) => lossSeries(run.events, run.checkpoints).map((s) => ({
    name: `${s.name}-${i}`, label: `${run.job.id} ${s.label}`, points: s.points,
    color: COLORS[i % COLORS.length], dashed: s.name === "valid",
  })));
}

function metricCurves(runs, name) {
  return runs.map((run, i) => ({ name: `${name}-${i}`, label: run.job.id, points: metricPoints(run, name),
    color: COLORS[i % COLORS.length] }));
}

function playgroundLink(runs) {
  const models = runs.map((run) => run.job.fine_tuned_model).filter(Boolean);
  if (models.length < 2) return null;
  const query = new URLSearchParams({ a: models[0], b: models[1] });
  return h("a", { class: "button", id: "compare-chat", href: `#/playground?${query}` },
    "Chat with the first two →");
}

function comparison(runs) {
  const evalNames = evalMetricNames(runs);
  return [
    h("section", { class: "card" }, h("div", { class: "page-head" }, h("h2", {}, "Side by side"),
      playgroundLink(runs)), h("div", { class: "scroll-x" }, comparisonTable(runs, evalNames))),
    h("div", { class: "compare-charts" },
      chartCard("compare-loss", "Loss (solid: training, dashed: validation)", lossCurves(runs), "loss"),
      evalNames.map((name) => chartCard(`compare-${name}`, name, metricCurves(runs, name), name))),
  ];
}

function pickerRow(job, selected, onToggle) {
  const { type } = methodOf(job);
  const box = h("input", { type: "checkbox", class: "compare-pick", value: job.id, checked: selected.has(job.id),
    onchange: () => onToggle(job.id, box.checked) });
  return h("tr", { class: "pick-row", dataset: { jobId: job.id } },
    h("td", {}, box),
    h("td", {}, h("label", { class: "mono" }, job.id)),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, type),
    h("td", { class: "mono small" }, job.fine_tuned_model || "—"),
    h("td", { class: "muted" }, formatTime(job.created_at)));
}

function selectionFrom(params) {
  return new Set((params.get("jobs") || "").split(",").map((id) => id.trim()).filter(Boolean));
}

/** Render the compare view into `view`; `params.jobs` lists the chosen job ids, comma-separated. */
export async function renderCompare(view, params) {
  view.replaceChildren(h("p", { class: "muted" }, "Loading jobs…"));
  const jobs = (await request("/v1/fine_tuning/jobs?limit=100")).data;
  const selected = selectionFrom(params);
  const result = h("div", { id: "comparison" });
  let stop = null;
  const show = () => {
    if (stop) stop();
    stop = null;
    const ids = jobs.map((job) => job.id).filter((id) => selected.has(id));
    history.replaceState(null, "", ids.length ? `#/compare?jobs=${ids.join(",")}` : "#/compare");
    if (ids.length < 2) {
      result.replaceChildren(h("p", { class: "muted", id: "compare-hint" }, "Pick two or more jobs to compare."));
      return;
    }
    stop = every(REFRESH_MS, async () => {
      const runs = await Promise.all(ids.map(loadJob));
      result.replaceChildren(...comparison(runs).flat());
      notify(null);
      return runs.some((run) => !TERMINAL.has(run.job.status)); // refresh while any still runs
    });
  };
  const onToggle = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    show();
  };
  const picker = jobs.length === 0 ? h("p", { class: "muted" }, "No jobs yet.")
    : h("table", { class: "table", id: "compare-picker" },
      h("thead", {}, h("tr", {}, ["", "Job", "Status", "Method", "Fine-tuned model", "Created"]
        .map((title) => h("th", {}, title)))),
      h("tbody", {}, jobs.map((job) => pickerRow(job, selected, onToggle))));
  view.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Compare jobs")),
    h("section", { class: "card" }, h("h2", {}, "Jobs"), h("div", { class: "scroll" }, picker)), result);
  show();
  return () => stop && stop();
}
