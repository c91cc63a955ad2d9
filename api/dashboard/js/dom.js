// Small DOM helpers shared by the pages: element building, formatting, the notice banner.

/**
 * `h("a", { class: "x", href: "#/", onclick: fn }, "text", child)`: an element with properties and children.
 * Keys starting with "on" add listeners; `dataset` sets data attributes; other keys become attributes.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key === "value") element.value = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function statusBadge(status) {
  return h("span", { class: `badge badge-${status}`, dataset: { status } }, status.replaceAll("_", " "));
}

export function formatTime(unix) {
  if (!unix) return "—";
  return new Date(unix * 1000).toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** The time of day only (the full date is in the element's title when shown with `timeCell`). */
export function formatClock(unix) {
  return unix ? new Date(unix * 1000).toLocaleTimeString(undefined, { hour12: false }) : "—";
}

export function timeElement(unix) {
  return h("time", { class: "muted", title: formatTime(unix) }, formatClock(unix));
}

export function formatNumber(value, digits = 4) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

/** `1536` -> "1.5 KiB". */
export function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Show an error (or a message) in the banner under the top bar; `null` hides it. */
export function notify(error) {
  const notice = document.getElementById("notice");
  if (!error) {
    notice.hidden = true;
    return;
  }
  notice.textContent = error.message || String(error);
  notice.hidden = false;
}

/**
 * A labelled form field wrapping `control`, with an optional hint below it. A `wide` field spans two
 * columns; a field holding several controls is a `div` so that clicking its label picks none of them.
 */
export function field(label, control, hint = null, { wide = false, group = false } = {}) {
  return h(group ? "div" : "label", { class: wide ? "field wide" : "field" },
    h("span", { class: "field-label" }, label), control, hint ? h("small", { class: "muted" }, hint) : null);
}

/** Run `task` now and every `ms` milliseconds until it returns false; returns a function that stops it. */
export function every(ms, task) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    let again = true;
    try {
      again = (await task()) !== false;
    } catch (error) {
      notify(error);
    }
    if (!stopped && again) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A resolved spec's max length (a job's or a dry run's `method`): counted, or "auto" until a worker counts. */
export function maxLengthText(method) {
  const value = (((method || {})[(method || {}).type] || {}).hyperparameters || {}).max_length;
  if (value === undefined) return "—";
  return value === "auto" ? "auto (counted when the job starts)" : `${value} tokens`;
}
