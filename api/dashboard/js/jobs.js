// The jobs page: every job of the project with its status, refreshed while the page is open.

import { request } from "./api.js";
import { every, formatTime, h, notify, statusBadge } from "./dom.js";

const REFRESH_MS = 3000;

function progressCell(job) {
  const progress = job.progress;
  const done = job.status === "succeeded";
  if (!done && (!progress || progress.percent === null)) return h("td", { class: "muted" }, "—");
  const percent = done ? 100 : progress.percent;
  const label = done ? `${progress ? progress.step : "all"} steps` : `${progress.step} / ${progress.total_steps}`;
  return h("td", {},
    h("div", { class: "progress", title: label },
      h("div", { class: "progress-bar", style: `width: ${percent}%` })),
    h("small", { class: "muted" }, label));
}

function jobRow(job) {
  const open = () => {
    location.hash = `#/jobs/${job.id}`;
  };
  return h("tr", { class: "job-row clickable", dataset: { jobId: job.id }, onclick: open },
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id)),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, job.model),
    h("td", { class: "mono small" }, job.fine_tuned_model || "—"),
    progressCell(job),
    h("td", { class: "muted" }, formatTime(job.created_at)));
}

function jobsTable(jobs) {
  if (jobs.length === 0) {
    return h("div", { class: "empty-state" },
      h("p", {}, "No fine-tuning jobs yet."),
      h("a", { class: "button", href: "#/new" }, "Start your first job"));
  }
  return h("table", { class: "table", id: "jobs-table" },
    h("thead", {}, h("tr", {}, ...["Job", "Status", "Base model", "Fine-tuned model", "Progress", "Created"]
      .map((title) => h("th", {}, title)))),
    h("tbody", {}, jobs.map(jobRow)));
}

/** Render the jobs page into `view`; returns the function that stops its refresh. */
export function renderJobs(view) {
  const body = h("div", { class: "card-body" }, h("p", { class: "muted" }, "Loading jobs…"));
  const updated = h("small", { class: "muted" });
  view.replaceChildren(
    h("div", { class: "page-head" },
      h("h1", {}, "Fine-tuning jobs"),
      h("div", { class: "actions" }, updated, h("a", { class: "button", href: "#/compare" }, "Compare jobs"),
        h("a", { class: "button", href: "#/new" }, "New job"))),
    h("section", { class: "card" }, body));
  return every(REFRESH_MS, async () => {
    const page = await request("/v1/fine_tuning/jobs?limit=100");
    body.replaceChildren(jobsTable(page.data));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    notify(null);
  });
}
