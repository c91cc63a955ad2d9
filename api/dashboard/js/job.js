// The job page: status, live loss curve (training and validation), events, checkpoints, pause/resume, cancel.

import { fetchNew, request } from "./api.js";
import { drawLossChart } from "./chart.js";
import { TERMINAL, every, formatNumber, formatTime, h, maxLengthText, notify, statusBadge, timeElement } from "./dom.js";

const REFRESH_MS = 1000;

/** Training points from metrics events; validation points from eval events and checkpoints, by step. */
export function lossSeries(events, checkpoints) {
  const train = new Map();
  const valid = new Map();
  for (const event of events) {
    const data = event.data || {};
    if (event.type !== "metrics" || typeof data.step !== "number") continue;
    if (typeof data.train_loss === "number") train.set(data.step, data.train_loss);
    if (typeof data.valid_loss === "number") valid.set(data.step, data.valid_loss);
  }
  for (const checkpoint of checkpoints) {
    const loss = (checkpoint.metrics || {}).valid_loss;
    if (typeof loss === "number") valid.set(checkpoint.step_number, loss);
  }
  const sorted = (map) => [...map.entries()].sort((a, b) => a[0] - b[0]);
  return [
    { name: "train", label: "training loss", points: sorted(train) },
    { name: "valid", label: "validation loss", points: sorted(valid) },
  ];
}

function progressText(progress) {
  if (!progress) return "—";
  return progress.total_steps ? `step ${progress.step} of ${progress.total_steps}` : `step ${progress.step}`;
}

function summary(job) {
  const hp = job.hyperparameters || {};
  const rows = [
    ["Base model", job.model],
    ["Fine-tuned model", job.fine_tuned_model
      ? h("a", { href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}`, class: "mono" },
        job.fine_tuned_model)
      : "—"],
    ["Training file", h("span", { class: "mono" }, job.training_file)],
    ["Validation file", h("span", { class: "mono" }, job.validation_file || "—")],
    ["Epochs · batch · LR ×", `${hp.n_epochs} · ${hp.batch_size} · ${hp.learning_rate_multiplier}`],
    ["Max length", maxLengthText(job.method)],
    ["Progress", progressText(job.progress)],
    job.status === "running" ? ["Estimated finish", formatTime(job.estimated_finish)] : null,
    ["Trained tokens", job.trained_tokens ?? "—"],
    ["Created · finished", `${formatTime(job.created_at)} · ${formatTime(job.finished_at)}`],
  ];
  const list = h("dl", { class: "summary" }, rows.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const error = job.error ? h("p", { class: "error-text" }, `${job.error.code}: ${job.error.message}`) : null;
  return [list, error];
}

function eventItem(event) {
  return h("li", { class: `event event-${event.level}`, dataset: { type: event.type } },
    timeElement(event.created_at),
    h("span", { class: `level level-${event.level}` }, event.level),
    h("span", {}, event.message));
}

function checkpointsTable(checkpoints) {
  if (checkpoints.length === 0) return h("p", { class: "muted" }, "No checkpoints yet.");
  const header = ["Step", "Checkpoint model", "Train loss", "Valid loss", "Saved", ""];
  return h("table", { class: "table", id: "checkpoints-table" },
    h("thead", {}, h("tr", {}, header.map((title) => h("th", {}, title)))),
    h("tbody", {}, checkpoints.map((c) => h("tr", { class: "checkpoint-row" },
      h("td", {}, String(c.step_number)),
      h("td", { class: "mono small" }, c.fine_tuned_model_checkpoint),
      h("td", {}, formatNumber(c.metrics.train_loss)),
      h("td", {}, formatNumber(c.metrics.valid_loss)),
      h("td", {}, timeElement(c.created_at)),
      h("td", {}, h("a", { href: `#/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}` },
        "Chat →"))))));
}

function layout(jobId) {
  const parts = {
    status: h("span"),
    pause: h("button", { class: "button", id: "pause-job", hidden: true }, "Pause"),
    resume: h("button", { class: "button", id: "resume-job", hidden: true }, "Resume"),
    cancel: h("button", { class: "button danger", id: "cancel-job", disabled: true }, "Cancel job"),
    summary: h("div"),
    chart: h("div", { class: "chart", id: "loss-chart" }),
    events: h("ol", { class: "events", id: "events" }),
    checkpoints: h("div", { id: "checkpoints" }),
  };
  const page = [
    h("div", { class: "page-head" },
      h("h1", {}, h("a", { href: "#/jobs", class: "muted" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
      h("div", { class: "actions" }, parts.status, parts.pause, parts.resume, parts.cancel)),
    h("div", { class: "grid-2" },
      h("section", { class: "card" }, h("h2", {}, "Loss"), parts.chart),
      h("section", { class: "card" }, h("h2", {}, "Details"), parts.summary)),
    h("section", { class: "card" }, h("h2", {}, "Checkpoints"), h("div", { class: "scroll" }, parts.checkpoints)),
    h("section", { class: "card" }, h("h2", {}, "Events"), h("div", { class: "scroll" }, parts.events)),
  ];
  return { parts, page };
}

/** Render job `jobId` into `view`, refreshing until the job ends; returns the function that stops it. */
export function renderJob(view, jobId) {
  const { parts, page } = layout(jobId);
  view.replaceChildren(...page);
  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  const events = new Map();
  let job = null;
  // A running job stops within a step of the request; the button stays off meanwhile.
  let cancelling = false;
  parts.cancel.addEventListener("click", async () => {
    cancelling = true;
    parts.cancel.disabled = true;
    parts.cancel.textContent = "Cancelling…";
    try {
      job = await request(`${base}/cancel`, { method: "POST" });
      parts.status.replaceChildren(statusBadge(job.status));
    } catch (error) {
      cancelling = false;
      notify(error);
    }
  });
  // Pause asks a running job to checkpoint at its next step; until its status shows it, the button stays off.
  let pausing = false;
  const control = (button, action, label) => button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = label;
    pausing = action === "pause";
    try {
      job = await request(`${base}/${action}`, { method: "POST" });
      parts.status.replaceChildren(statusBadge(job.status));
    } catch (error) {
      pausing = false;
      notify(error);
    }
  });
  control(parts.pause, "pause", "Pausing…");
  control(parts.resume, "resume", "Resuming…");
  const showControls = () => {
    if (job.status !== "running") pausing = false;
    parts.pause.hidden = !["queued", "running"].includes(job.status);
    parts.pause.disabled = pausing;
    if (!pausing) parts.pause.textContent = "Pause";
    parts.resume.hidden = job.status !== "paused";
    parts.resume.disabled = false;
    parts.resume.textContent = "Resume";
  };
  return every(REFRESH_MS, async () => {
    job = await request(base);
    for (const event of await fetchNew(`${base}/events`, events)) events.set(event.id, event);
    const checkpoints = (await request(`${base}/checkpoints?limit=100`)).data;
    // Ids sort by creation time, so newest first is descending id order.
    const ordered = [...events.values()].sort((a, b) => (a.id < b.id ? 1 : -1));
    parts.status.replaceChildren(statusBadge(job.status));
    parts.cancel.disabled = cancelling || TERMINAL.has(job.status);
    if (TERMINAL.has(job.status)) parts.cancel.textContent = "Cancel job";
    showControls();
    parts.summary.replaceChildren(...summary(job).filter(Boolean));
    drawLossChart(parts.chart, lossSeries(ordered, checkpoints), job.progress && job.progress.total_steps);
    parts.events.replaceChildren(...ordered.map(eventItem));
    parts.checkpoints.replaceChildren(checkpointsTable(checkpoints));
    notify(null);
    return !TERMINAL.has(job.status);
  });
}
