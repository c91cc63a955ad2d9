// The playground: one prompt sent to a base model and to a fine-tuned model, answers side by side.

import { chat, request } from "./api.js";
import { field, h, notify } from "./dom.js";

function modelSelect(id, models, emptyLabel) {
  return h("select", { id, name: id },
    models.length === 0 ? h("option", { value: "" }, emptyLabel) : null,
    models.map((model) => h("option", { value: model.id }, model.id)));
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

function controls(base, tuned) {
  return h("div", { class: "form-grid playground-grid" },
    field("Base model", base),
    field("Fine-tuned model", tuned, "Its base model is chosen on the left"),
    field("Max tokens", h("input", { type: "number", name: "max_tokens", value: "64", min: "1", max: "4096" })),
    field("Temperature", h("input", { type: "number", name: "temperature", value: "0", min: "0", max: "2",
      step: "0.1" }), "0: greedy, the same answer every time"));
}

/** Render the playground into `view`; `params` may name the fine-tuned model to preselect (`model`). */
export async function renderPlayground(view, params) {
  view.replaceChildren(h("p", { class: "muted" }, "Loading models…"));
  const models = (await request("/v1/models")).data;
  const wanted = params.get("model");
  const tunedModels = models.filter((model) => model.base_model);
  if (wanted && !tunedModels.some((model) => model.id === wanted)) tunedModels.unshift({ id: wanted });
  const base = modelSelect("base-model", models.filter((model) => !model.base_model), "No base models");
  const tuned = modelSelect("tuned-model", tunedModels, "No fine-tuned models yet");
  const followBase = () => {
    const chosen = models.find((model) => model.id === tuned.value);
    if (chosen && chosen.base_model) base.value = chosen.base_model;
  };
  tuned.addEventListener("change", followBase);
  if (wanted) tuned.value = wanted;
  followBase();
  const send = h("button", { class: "button primary", type: "submit", id: "send-prompt" }, "Send to both");
  const form = h("form", { class: "card", id: "playground-form" }, controls(base, tuned),
    field("System prompt (optional)", h("input", { name: "system", placeholder: "You are a helpful assistant." })),
    field("Prompt", h("textarea", { name: "prompt", id: "prompt", rows: 3, required: true })),
    h("div", { class: "actions" }, send));
  const left = answerPane("base", "Base");
  const right = answerPane("tuned", "Fine-tuned");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!tuned.value) {
      notify(new Error("No fine-tuned model to compare with: train one first"));
      return;
    }
    send.disabled = true;
    const body = requestBody(form);
    await Promise.all([runPane(left, base.value, body), runPane(right, tuned.value, body)]);
    send.disabled = false;
  });
  view.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Playground")), form,
    h("div", { class: "grid-2 answers" }, left.pane, right.pane));
}
