// The new-job page: upload a dataset (its problems shown line by line), pick a model, see the job's estimate
// (a dry run of starting it: an example too long is named before the job exists), start it.

import { request } from "./api.js";
import { field, h, maxLengthText, notify } from "./dom.js";

/** The problems of an invalid file, one list item per line of the file. */
export function problemList(problems) {
  return h("ul", { class: "problems" }, problems.map((problem) =>
    h("li", { class: "problem", dataset: { line: problem.line } },
      h("span", { class: "line-no" }, `line ${problem.line}`),
      h("span", {}, problem.message.replace(/^line \d+:\s*/, "")),
      h("code", { class: "muted" }, problem.code))));
}

function uploadResult(error) {
  const head = h("p", { class: "error-text" }, error.problems.length
    ? `The file has ${error.problems.length} problem${error.problems.length > 1 ? "s" : ""}; fix them and upload it again.`
    : error.message);
  return [head, error.problems.length ? problemList(error.problems) : null];
}

/** A file picker: choose an uploaded file or upload a new one (validated by the API on upload). */
function fileChooser(name, files, optional) {
  const select = h("select", { name, id: `${name}-select` },
    optional ? h("option", { value: "" }, "None") : h("option", { value: "" }, "Choose or upload a file…"),
    files.map((file) => h("option", { value: file.id }, `${file.filename} (${file.id})`)));
  const input = h("input", { type: "file", accept: ".jsonl,.json,.txt", id: `${name}-upload` });
  const result = h("div", { class: "upload-result", id: `${name}-result` });
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    result.replaceChildren(h("p", { class: "muted" }, `Uploading and checking ${file.name}…`));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file);
    try {
      const uploaded = await request("/v1/files", { method: "POST", form });
      select.append(h("option", { value: uploaded.id }, `${uploaded.filename} (${uploaded.id})`));
      select.value = uploaded.id;
      select.dispatchEvent(new Event("change", { bubbles: true }));  // the estimate follows the choice
      result.replaceChildren(h("p", { class: "ok-text" },
        `✓ ${uploaded.filename} is valid: stored as ${uploaded.id} (${uploaded.bytes} bytes)`));
    } catch (error) {
      result.replaceChildren(...uploadResult(error).filter(Boolean));
    }
    input.value = "";
  });
  const controls = h("div", { class: "file-chooser" }, select, h("span", { class: "muted" }, "or"), input);
  return { element: h("div", {}, controls, result), value: () => select.value || null };
}

function numberInput(name, value, { step = "1", min = "1", placeholder = "auto" } = {}) {
  return h("input", { type: "number", name, id: name, value, step, min, placeholder });
}

function readNumber(form, name) {
  const value = form.elements[name].value.trim();
  return value === "" ? "auto" : Number(value);
}

function jobBody(form, training, validation) {
  const hyperparameters = {
    n_epochs: readNumber(form, "n_epochs"),
    batch_size: readNumber(form, "batch_size"),
    learning_rate_multiplier: readNumber(form, "learning_rate_multiplier"),
  };
  for (const name of ["num_blocks", "max_length", "eval_every"]) {
    const value = readNumber(form, name);
    if (value !== "auto") hyperparameters[name] = value;
  }
  const body = {
    model: form.elements.model.value,
    training_file: training,
    method: { type: "diablo", diablo: { hyperparameters } },
  };
  if (validation) body.validation_file = validation;
  if (form.elements.suffix.value.trim()) body.suffix = form.elements.suffix.value.trim();
  return body;
}

function hyperparameterFields(baseModels) {
  return h("div", { class: "form-grid" },
    field("Base model", h("select", { name: "model", id: "model" },
      baseModels.map((model) => h("option", { value: model.id }, model.id))), null, { wide: true }),
    field("Suffix", h("input", { name: "suffix", id: "suffix", maxlength: 64, placeholder: "my-model" }),
      "Part of the fine-tuned model's name"),
    field("Epochs", numberInput("n_epochs", "")),
    field("Batch size", numberInput("batch_size", "")),
    field("Learning-rate multiplier", numberInput("learning_rate_multiplier", "", { step: "any", min: "0" }),
      "× the DiaBlo base rate 5e-4"),
    field("Blocks per layer", numberInput("num_blocks", "", { placeholder: "64" }),
      "DiaBlo's N: diagonal blocks of each adapted weight"),
    field("Max length (tokens)", numberInput("max_length", "", { min: "8" }),
      "Tokens per example; auto: the longest example, within the model's context. A longer one is refused"),
    field("Evaluate every (steps)", numberInput("eval_every", "", { placeholder: "end only" }),
      "Validation loss every this many steps, and at the end"));
}

function formatDuration(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** The estimate's one line: steps, tokens, duration, max length, and whether the speed was measured. */
export function estimateText(estimate) {
  const speed = estimate.basis === "measured"
    ? `measured: ${estimate.tokens_per_second} tokens/s over ${estimate.jobs_measured} job(s) at ${estimate.precision}`
    : `no measurement yet: ${estimate.message}`;
  return `≈ ${estimate.total_steps} steps · ${estimate.estimated_tokens.toLocaleString()} tokens · `
    + `about ${formatDuration(estimate.estimated_duration_seconds)} · max length ${maxLengthText(estimate.method)} `
    + `(${speed})`;
}

/**
 * Keep `box` showing what starting the form's job would do: a dry run of the create request (checked as
 * creating it is, nothing created), answering its estimate, or the error starting it would meet.
 */
function followEstimate(form, box, training, validation) {
  let latest = 0;
  const update = async () => {
    const ticket = ++latest;
    if (!training.value()) {
      box.replaceChildren(h("span", { class: "muted" }, "Choose a training file to see an estimate."));
      return;
    }
    try {
      const body = { ...jobBody(form, training.value(), validation.value()), dry_run: true };
      const estimate = await request("/v1/fine_tuning/jobs", { method: "POST", json: body });
      if (ticket === latest) box.replaceChildren(h("span", {}, estimateText(estimate)));
    } catch (error) {
      const why = error.code ? `${error.message} (${error.code})` : error.message;
      if (ticket === latest) box.replaceChildren(h("span", { class: "error-text" }, `Cannot start: ${why}`));
    }
  };
  form.addEventListener("change", update);
  update();
}

/** Render the new-job page into `view`. */
export async function renderNewJob(view) {
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const [files, models] = await Promise.all([
    request("/v1/files?purpose=fine-tune"),
    request("/v1/models"),
  ]);
  const training = fileChooser("training", files.data, false);
  const validation = fileChooser("validation", files.data, true);
  const baseModels = models.data.filter((model) => !model.base_model);
  const submit = h("button", { class: "button primary", type: "submit", id: "start-job" }, "Start fine-tuning");
  const form = h("form", { id: "new-job-form" },
    h("section", { class: "card" }, h("h2", {}, "1 · Data"),
      h("p", { class: "muted" }, "JSONL, one chat example per line: {\"messages\": [{\"role\", \"content\"}, …]}."),
      field("Training file", training.element, null, { group: true }),
      field("Validation file (optional)", validation.element, null, { group: true })),
    h("section", { class: "card" }, h("h2", {}, "2 · Model and hyperparameters"),
      hyperparameterFields(baseModels),
      h("p", { class: "estimate muted", id: "job-estimate" }),
      h("div", { class: "actions" }, submit)));
  followEstimate(form, form.querySelector("#job-estimate"), training, validation);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!training.value()) {
      notify(new Error("Choose or upload a training file first"));
      return;
    }
    submit.disabled = true;
    try {
      const job = await request("/v1/fine_tuning/jobs", { method: "POST", json: jobBody(form, training.value(), validation.value()) });
      notify(null);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      notify(error);
      submit.disabled = false;
    }
  });
  view.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "New fine-tuning job")), form);
}
