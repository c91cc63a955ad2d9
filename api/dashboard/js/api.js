// The API client of the dashboard: every request carries the API key kept in local storage.

const KEY_STORAGE = "diablo.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY_STORAGE, value);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An error answered by the API: the OpenAI envelope's fields, plus `problems` for invalid files. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
    this.problems = Array.isArray(error.problems) ? error.problems : [];
  }
}

function headersWith(extra = {}) {
  const headers = new Headers(extra);
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, (body && body.error) || { message: `HTTP ${response.status}` });
}

/** Send a request; `json` or `form` becomes the body. Resolves to the parsed JSON answer. */
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: headersWith() };
  if (json !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Objects of a newest-first list that are not in `seen`, reading pages until a known one appears. */
export async function fetchNew(path, seen, limit = 100) {
  const fresh = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set("after", after);
    const page = await request(`${path}?${query}`);
    const unseen = page.data.filter((item) => !seen.has(item.id));
    fresh.push(...unseen);
    if (!page.has_more || page.data.length === 0 || unseen.length < page.data.length) return fresh;
    after = page.data[page.data.length - 1].id;
  }
}

function parseEvents(buffer, onChunk) {
  const events = buffer.split("\n\n");
  const rest = events.pop();
  for (const event of events) {
    const data = event
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trimStart())
      .join("\n");
    if (data && data !== "[DONE]") onChunk(JSON.parse(data));
  }
  return rest;
}

/**
 * A chat completion streamed as server-sent events; `onText` receives each piece of the answer.
 * Resolves to `{ content, finishReason, usage }`. A JSON answer (no stream) is accepted too.
 */
export async function chat(body, onText, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    signal,
    headers: headersWith({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!response.ok) throw await errorOf(response);
  if ((response.headers.get("Content-Type") || "").includes("application/json")) {
    const completion = await response.json();
    const choice = completion.choices[0];
    onText(choice.message.content);
    return { content: choice.message.content, finishReason: choice.finish_reason, usage: completion.usage };
  }
  const result = { content: "", finishReason: null, usage: null };
  const onChunk = (chunk) => {
    // A failure after the stream started arrives as one error event.
    if (chunk.error) throw new ApiError(500, chunk.error);
    const choice = (chunk.choices || [])[0];
    if (chunk.usage) result.usage = chunk.usage;
    if (!choice) return;
    if (choice.delta && choice.delta.content) {
      result.content += choice.delta.content;
      onText(choice.delta.content);
    }
    if (choice.finish_reason) result.finishReason = choice.finish_reason;
  };
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = parseEvents((buffer + value).replaceAll("\r\n", "\n"), onChunk);
  }
  parseEvents(buffer + "\n\n", onChunk);
  return result;
}

/** The file name in a Content-Disposition header (`filename*=utf-8''…` preferred), or `fallback`. */
export function filenameOf(disposition, fallback) {
  const encoded = /filename\*=utf-8''([^;]+)/i.exec(disposition || "");
  if (encoded) return decodeURIComponent(encoded[1]);
  const plain = /filename="([^"]+)"/i.exec(disposition || "");
  return plain ? plain[1] : fallback;
}

/**
 * A file fetched with the API key (a plain link could not send it), read whole as a Blob. `onResponse` is
 * called once the server answers (an export is built before that), `onProgress(received, total)` per piece;
 * `total` is null without a Content-Length. Resolves to `{ blob, filename }`.
 */
export async function download(path, { onResponse, onProgress, fallbackName = "download" } = {}) {
  const response = await fetch(path, { headers: headersWith() });
  if (!response.ok) throw await errorOf(response);
  if (onResponse) onResponse();
  const total = Number(response.headers.get("Content-Length")) || null;
  const chunks = [];
  let received = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    if (onProgress) onProgress(received, total);
  }
  const type = response.headers.get("Content-Type") || "application/octet-stream";
  const filename = filenameOf(response.headers.get("Content-Disposition"), fallbackName);
  return { blob: new Blob(chunks, { type }), filename };
}
