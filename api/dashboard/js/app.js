// The dashboard's entry point: hash routing between the pages and the API-key setting.

import { apiKey, setApiKey } from "./api.js";
import { renderCompare } from "./compare.js";
import { h, notify } from "./dom.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderModels } from "./models.js";
import { renderNewJob } from "./new_job.js";
import { renderPlayground } from "./playground.js";

const view = document.getElementById("view");
let stopPage = null;

/** `#/jobs/ftjob-1?x=y` -> { parts: ["jobs", "ftjob-1"], params: URLSearchParams("x=y") }. */
export function parseHash(hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function pageFor(parts) {
  const [page = "jobs", id] = parts;
  if (page === "jobs" && id) return { name: "jobs", render: (root) => renderJob(root, id) };
  const pages = {
    jobs: (root) => renderJobs(root),
    new: (root) => renderNewJob(root),
    models: (root) => renderModels(root),
    compare: (root, params) => renderCompare(root, params),
    playground: (root, params) => renderPlayground(root, params),
  };
  return pages[page] ? { name: page, render: pages[page] } : null;
}

async function route() {
  if (stopPage) stopPage();
  stopPage = null;
  notify(null);
  const { parts, params } = parseHash(location.hash);
  const page = pageFor(parts);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", page !== null && link.dataset.page === page.name);
  }
  if (!page) {
    view.replaceChildren(h("p", {}, "No such page. ", h("a", { href: "#/jobs" }, "Back to the jobs")));
    return;
  }
  // Each visit renders into its own element, so a page still loading after the user moved on is discarded.
  const root = h("div", { class: "page", dataset: { page: page.name } });
  view.replaceChildren(root);
  try {
    const stop = await page.render(root, params);
    if (typeof stop !== "function") return;
    if (root.isConnected) stopPage = stop;
    else stop();
  } catch (error) {
    notify(error);
  }
}

function setUpApiKey() {
  const input = document.getElementById("api-key");
  input.value = apiKey();
  const save = (event) => {
    event.preventDefault();
    if (input.value.trim() === apiKey()) return;
    setApiKey(input.value.trim());
    route();
  };
  input.addEventListener("change", save);
  document.getElementById("api-key-form").addEventListener("submit", save);
}

setUpApiKey();
window.addEventListener("hashchange", route);
if (!location.hash) history.replaceState(null, "", "#/jobs");
route();
