// The events list: newest on top, one row per event ID (an event seen twice, e.g. again after
// the agent restarted, is shown once), payload shown as text when printable, a glob filter.

import { clock, el } from "./dom.js";

const MAX_ROWS = 1000;

// Payload (base64 or null, as the agent renders it) -> {text, kind}; kind is "text",
// "base64" (bytes that are not printable UTF-8) or "none".
export function describePayload(b64) {
  if (!b64) return { text: "", kind: "none" };
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    // printable: no control characters except tab and line breaks
    if (!/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) {
      return { text, kind: "text" };
    }
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
  }
  return { text: b64, kind: "base64" };
}

// "deploy-*" -> a RegExp matching whole names; * any text, ? one character.
export function globRegExp(glob) {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

export class EventList {
  constructor(tbody, counter, onArrival) {
    this.tbody = tbody;
    this.counter = counter;
    this.onArrival = onArrival; // (timeMs) => void, for every event that arrived live
    this.rows = new Map(); // ID -> <tr>
    this.origins = new Map(); // ID -> node name, for events this page fired
    this.filter = null;
  }

  // Remember where an event came from (we fired it), before or after it is listed.
  setOrigin(id, node) {
    this.origins.set(id, node);
    const row = this.rows.get(id);
    if (row) row.querySelector(".origin").textContent = node;
  }

  // `ev` as /v1/event/list renders it; `arrived` is a time in ms, or null for events the
  // agent already had when the page connected. Returns false for an ID already listed.
  add(ev, arrived) {
    if (this.rows.has(ev.ID)) return false;
    const row = eventRow(ev, arrived, this.origins.get(ev.ID) || "");
    row.hidden = this.filter !== null && !this.filter.test(ev.Name);
    this.tbody.prepend(row);
    this.rows.set(ev.ID, row);
    while (this.rows.size > MAX_ROWS) {
      const [oldest, oldRow] = this.rows.entries().next().value;
      oldRow.remove();
      this.rows.delete(oldest);
    }
    if (arrived !== null) this.onArrival(arrived);
    this.count();
    return true;
  }

  setFilter(glob) {
    this.filter = glob.trim() ? globRegExp(glob.trim()) : null;
    for (const row of this.rows.values()) {
      row.hidden = this.filter !== null && !this.filter.test(row.dataset.name);
    }
    this.count();
  }

  count() {
    const total = this.rows.size;
    if (this.filter === null) {
      this.counter.textContent = `${total}`;
    } else {
      let shown = 0;
      for (const row of this.rows.values()) if (!row.hidden) shown += 1;
      this.counter.textContent = `${shown} of ${total} match`;
    }
  }
}

function eventRow(ev, arrived, origin) {
  const payload = describePayload(ev.Payload);
  const filters = [["node", ev.NodeFilter], ["service", ev.ServiceFilter], ["tag", ev.TagFilter]]
    .filter(([, value]) => value)
    .map(([key, value]) => el("span", { class: "tag" }, `${key}=${value}`));
  return el("tr", { "data-id": ev.ID, "data-name": ev.Name },
    el("td", { class: "arrived", "data-label": "Arrived", title: arrived === null ? "listed by the agent when this " +
      "page connected" : new Date(arrived).toISOString() },
      arrived === null ? "earlier" : clock(arrived)),
    el("th", { scope: "row", class: "name", title: `ID ${ev.ID}` }, ev.Name),
    el("td", { class: `payload ${payload.kind}`, "data-label": "Payload" },
      payload.kind === "base64" ? el("span", { class: "kind" }, "base64") : "",
      payload.kind === "none" ? "—" : payload.text),
    el("td", { class: "filters", "data-label": "Filters" }, ...(filters.length ? filters : ["—"])),
    el("td", { class: "origin", "data-label": "Origin" }, origin || "—"),
    el("td", { class: "ltime", "data-label": "LTime" }, String(ev.LTime)),
  );
}
