// The models page: the project's fine-tuned models and their checkpoints, each downloadable as its adapter
// or exported (merged Hugging Face checkpoint, GGUF) through GET /v1/models/{model}/content.

import { download, request } from "./api.js";
import { formatBytes, formatNumber, h, notify, timeElement } from "./dom.js";

/** The buttons of each row: what they fetch (the content route's query) and what they are called. */
export const EXPORTS = [
  { key: "adapter", label: "Adapter", query: { format: "adapter" }, title: "The adapter files (tar)" },
  { key: "merged", label: "Merged", query: { format: "merged" },
    title: "A Hugging Face checkpoint with the adapter merged in (tar): transformers, vLLM, TGI" },
  { key: "gguf-f16", label: "GGUF f16", query: { format: "gguf", quantization: "f16" },
    title: "One GGUF file for llama.cpp or Ollama, float16" },
  { key: "gguf-q8_0", label: "GGUF q8_0", query: { format: "gguf", quantization: "q8_0" },
    title: "One GGUF file for llama.cpp or Ollama, 8-bit" },
];

function contentPath(model, query) {
  return `/v1/models/${encodeURIComponent(model)}/content?${new URLSearchParams(query)}`;
}

/** Hand a fetched file to the browser as a download. */
function saveFile({ blob, filename }) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later: the browser may still be reading the blob when click() returns.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function setStatus(status, state, ...children) {
  status.dataset.state = state;
  status.classList.toggle("error-text", state === "failed");
  status.replaceChildren(...children);
}

/** Fetch one export of `model`: "building…" until the server answers, then the bytes received, then saved. */
async function runExport(model, kind, buttons, status) {
  for (const button of buttons) button.disabled = true;
  const started = performance.now();
  const waiting = kind.key === "adapter" ? "preparing…" : "building… (merging the adapter into the base model)";
  const elapsed = () => `${Math.round((performance.now() - started) / 1000)} s`;
  setStatus(status, "building", `${kind.label}: ${waiting}`);
  const timer = setInterval(() => {
    status.textContent = `${kind.label}: ${waiting} ${elapsed()}`;
  }, 1000);
  const bar = h("div", { class: "progress-bar", style: "width: 0%" });
  const text = h("span");
  const onResponse = () => {
    clearInterval(timer);
    setStatus(status, "downloading", h("div", { class: "progress" }, bar), text);
  };
  const onProgress = (received, total) => {
    if (total) bar.style.width = `${Math.min(100, (100 * received) / total)}%`;
    text.textContent = `${kind.label}: ${formatBytes(received)}${total ? ` of ${formatBytes(total)}` : ""}`;
  };
  try {
    const file = await download(contentPath(model, kind.query), { onResponse, onProgress,
      fallbackName: `${model.replace(/[^\w.-]+/g, "_")}-${kind.key}` });
    saveFile(file);
    const size = formatBytes(file.blob.size);
    setStatus(status, "saved", `${kind.label}: saved ${file.filename} (${size}, ${elapsed()})`);
    status.dataset.filename = file.filename;
  } catch (error) {
    const code = error.code ? h("code", {}, error.code) : null;
    setStatus(status, "failed", `${kind.label} failed: ${error.message} `, code);
  } finally {
    clearInterval(timer);
    for (const button of buttons) button.disabled = false;
  }
}

function exportCell(model) {
  const status = h("div", { class: "export-status small", dataset: { state: "idle" } });
  const buttons = EXPORTS.map((kind) =>
    h("button", { class: "button compact", type: "button", title: kind.title, dataset: { format: kind.key } },
      kind.label));
  buttons.forEach((button, i) => {
    button.addEventListener("click", () => runExport(model, EXPORTS[i], buttons, status));
  });
  return h("td", {}, h("div", { class: "export-buttons" }, buttons), status);
}

function chatLink(model) {
  return h("a", { href: `#/playground?model=${encodeURIComponent(model)}`, class: "small" }, "Chat →");
}

function modelRow(model) {
  return h("tr", { class: "model-row", dataset: { model: model.id } },
    h("td", {}, h("div", { class: "mono" }, model.id), chatLink(model.id)),
    h("td", {}, h("div", {}, model.base_model),
      model.job_id ? h("a", { href: `#/jobs/${model.job_id}`, class: "mono small" }, model.job_id) : null),
    h("td", {}, timeElement(model.created)),
    exportCell(model.id));
}

/** A checkpoint's row, under its model's: named by what follows the model's name (`:ckpt-step-25`). */
function checkpointRow(model, checkpoint) {
  const name = checkpoint.fine_tuned_model_checkpoint;
  const short = name.startsWith(model.id) ? `↳ ${name.slice(model.id.length)}` : name;
  const loss = (checkpoint.metrics || {}).valid_loss ?? (checkpoint.metrics || {}).train_loss;
  return h("tr", { class: "model-row checkpoint", dataset: { model: name } },
    h("td", { class: "indent" }, h("div", { class: "mono", title: name }, short), chatLink(name)),
    h("td", { class: "muted" }, `checkpoint at step ${checkpoint.step_number} · loss ${formatNumber(loss)}`),
    h("td", {}, timeElement(checkpoint.created_at)),
    exportCell(name));
}

async function checkpointsOf(model) {
  if (!model.job_id) return [];
  return (await request(`/v1/fine_tuning/jobs/${encodeURIComponent(model.job_id)}/checkpoints?limit=100`)).data;
}

function modelsTable(models, checkpoints) {
  if (models.length === 0) {
    return h("div", { class: "empty-state" },
      h("p", {}, "No fine-tuned models yet."),
      h("a", { class: "button", href: "#/new" }, "Train one"));
  }
  return h("table", { class: "table", id: "models-table" },
    h("thead", {}, h("tr", {}, ["Model", "Trained from", "Created", "Download or export"]
      .map((title) => h("th", {}, title)))),
    h("tbody", {}, models.flatMap((model, i) =>
      [modelRow(model), ...checkpoints[i].map((checkpoint) => checkpointRow(model, checkpoint))])));
}

/** Render the models page into `view` (loaded once: a refresh would drop the state of running downloads). */
export async function renderModels(view) {
  view.replaceChildren(h("p", { class: "muted" }, "Loading models…"));
  const models = (await request("/v1/models")).data.filter((model) => model.base_model);
  const checkpoints = await Promise.all(models.map(checkpointsOf));
  const again = () => renderModels(view).catch(notify);
  const reload = h("button", { class: "button", type: "button", onclick: again }, "Reload");
  view.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Models"), h("div", { class: "actions" }, reload)),
    h("p", { class: "muted" }, "Each export is built on the server the first time it is asked for ",
      "(a merged or GGUF export loads the base model) and kept for later downloads."),
    h("section", { class: "card" }, h("div", { class: "scroll-x" }, modelsTable(models, checkpoints))));
}
