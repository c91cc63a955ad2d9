// The playground: one prompt sent to any two models (base models, fine-tuned models, checkpoints), answers
// side by side.

import { chat, request } from "./api.js";
import { field, h, notify } from "./dom.js";

/** Every model to choose from, grouped: base models, fine-tuned models, and each one's checkpoints. */
async function modelChoices() {
  const models = (await request("/v1/models")).data;
  const tuned = models.filter((model) => model.base_model);
  const checkpoints = await Promise.all(tuned.map(async (model) => {
    if (!model.job_id) return [];
    const path = `/v1/fine_tuning/jobs/${encodeURIComponent(model.job_id)}/checkpoints?limit=100`;
    return (await request(path)).data.map((c) => ({ id: c.fine_tuned_model_checkpoint, base_model: model.base_model,
      label: `${c.fine_tuned_model_checkpoint} (step ${c.step_number})` }));
  }));
  return [
    { label: "Base models", models: models.filter((model) => !model.base_model) },
    { label: "Fine-tuned models", models: tuned },
    { label: "Checkpoints", models: checkpoints.flat() },
  ].filter((group) => group.models.length > 0);
}

function modelSelect(id, groups) {
  return h("select", { id, name: id },
    groups.length === 0 ? h("option", { value: "" }, "No models") : null,
    groups.map((group) => h("optgroup", { label: group.label },
      group.models.map((model) => h("option", { value: model.id }, model.label || model.id)))));
}

/** Choose `wanted` in `select`, adding it (a model the lists do not show, e.g. from a link) when missing. */
function choose(select, wanted) {
  if (!wanted) return;
  if (![...select.options].some((option) => option.value === wanted)) {
    select.append(h("option", { value: wanted }, wanted));
  }
  select.value = wanted;
}

/**
 * The two models to start with: `a` and `b` from the link; `model` alone is compared with its base model;
 * otherwise the first base model and the first fine-tuned model (or checkpoint).
 */
export function initialPair(groups, params) {
  const all = groups.flatMap((group) => group.models);
  const first = (label) => (groups.find((group) => group.label === label) || { models: [] }).models[0];
  const wanted = params.get("b") || params.get("model");
  const chosen = all.find((model) => model.id === wanted);
  const base = params.get("a") || (chosen && chosen.base_model) || (first("Base models") || {}).id;
  const other = wanted || (first("Fine-tuned models") || first("Checkpoints") || first("Base models") || {}).id;
  return [base || "", other || ""];
}

function answerPane(side, title) {
  const text = h("div", { class: "answer-text", id: `answer-${side}` });
  const meta = h("small", { class: "muted", id: `meta-${side}` });
  const name = h("span", { class: "mono small" });
  const pane = h("section", { class: "card answer", dataset: { side } }, h("h2", {}, title, " ", name), text, meta);
  return { pane, text, meta, name };
}

async function runPane(pane, model, body) {
  pane.name.textContent = model;
  pane.text.textContent = "";
  delete pane.text.dataset.done;
  pane.text.classList.remove("error-text");
  pane.meta.textContent = "generating…";
  const started = performance.now();
  try {
    const result = await chat({ ...body, model }, (piece) => pane.text.append(piece));
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const tokens = result.usage ? `${result.usage.completion_tokens} tokens · ` : "";
    pane.meta.textContent = `${tokens}${seconds} s · finish: ${result.finishReason || "?"}`;
    pane.text.dataset.done = "true";
  } catch (error) {
    pane.text.textContent = error.message;
    pane.text.classList.add("error-text");
    pane.meta.textContent = error.code || "";
  }
}

function requestBody(form) {
  const messages = [];
  const system = form.elements.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: form.elements.prompt.value });
  return {
    messages,
    max_tokens: Number(form.elements.max_tokens.value) || 64,
    temperature: Number(form.elements.temperature.value),
  };
}

function controls(left, right) {
  return h("div", { class: "form-grid playground-grid" },
    field("Model A", left, "A base model, a fine-tuned model or a checkpoint"),
    field("Model B", right, "Any of them too: two checkpoints, two methods…"),
    field("Max tokens", h("input", { type: "number", name: "max_tokens", value: "64", min: "1", max: "4096" })),
    field("Temperature", h("input", { type: "number", name: "temperature", value: "0", min: "0", max: "2",
      step: "0.1" }), "0: greedy, the same answer every time"));
}

/**
 * Render the playground into `view`. `params` may choose the models: `a` and `b`, or `model` (shown as B,
 * next to its base model as A).
 */
export async function renderPlayground(view, params) {
  view.replaceChildren(h("p", { class: "muted" }, "Loading models…"));
  const groups = await modelChoices();
  const left = modelSelect("model-a", groups);
  const right = modelSelect("model-b", groups);
  const [first, second] = initialPair(groups, params);
  choose(left, first);
  choose(right, second);
  const send = h("button", { class: "button primary", type: "submit", id: "send-prompt" }, "Send to both");
  const form = h("form", { class: "card", id: "playground-form" }, controls(left, right),
    field("System prompt (optional)", h("input", { name: "system", placeholder: "You are a helpful assistant." })),
    field("Prompt", h("textarea", { name: "prompt", id: "prompt", rows: 3, required: true })),
    h("div", { class: "actions" }, send));
  const paneA = answerPane("a", "A");
  const paneB = answerPane("b", "B");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!left.value || !right.value) {
      notify(new Error("Choose two models to compare"));
      return;
    }
    send.disabled = true;
    const body = requestBody(form);
    await Promise.all([runPane(paneA, left.value, body), runPane(paneB, right.value, body)]);
    send.disabled = false;
  });
  view.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Playground")), form,
    h("div", { class: "grid-2 answers" }, paneA.pane, paneB.pane));
}
