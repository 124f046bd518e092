// The members table: the cluster as this agent sees it, and the member changes (join, failed,
// left) with the time the page learned of them, for the chart.

import { el } from "./dom.js";

// Serf's member status numbers, as /v1/agent/members reports them.
const STATUS = { 0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed" };
// Which status change is worth a mark on the chart, by new status and by stream record Type.
const CHANGE = { alive: "join", failed: "failed", left: "left" };
const RECORD = { NodeJoin: "join", NodeFailed: "failed", NodeLeave: "left" };

export function statusName(code) {
  return STATUS[code] || `status ${code}`;
}

export class Members {
  constructor(tbody, counter, onChange) {
    this.tbody = tbody;
    this.counter = counter;
    this.onChange = onChange; // (change: {time, kind, name}) => void
    this.byName = new Map();
    this.seeded = false; // the first snapshot is the baseline, not a series of joins
    this.shown = ""; // what the table shows, to redraw only when it changes
  }

  // A full list from GET /v1/agent/members (a new session's snapshot): diff it against what
  // we had; the first one is the baseline.
  replaceAll(list) {
    const seen = new Set();
    for (const m of list) {
      seen.add(m.Name);
      this._put(m);
    }
    for (const name of [...this.byName.keys()]) {
      if (!seen.has(name)) this.byName.delete(name); // reaped
    }
    this.seeded = true;
    this.render();
  }

  // One record of the Node topic of the event stream: its Type says what happened.
  apply(type, member) {
    if (type === "NodeReap") this.byName.delete(member.Name);
    else this.byName.set(member.Name, member);
    if (RECORD[type]) this.onChange({ time: Date.now(), kind: RECORD[type], name: member.Name });
    this.render();
  }

  _put(m) {
    const before = this.byName.get(m.Name);
    this.byName.set(m.Name, m);
    const now = statusName(m.Status);
    if (!this.seeded || (before && statusName(before.Status) === now)) return;
    const kind = CHANGE[now];
    if (kind && (before || kind === "join")) {
      this.onChange({ time: Date.now(), kind, name: m.Name });
    }
  }

  render() {
    const rows = [...this.byName.values()].sort((a, b) => a.Name.localeCompare(b.Name));
    const shown = JSON.stringify(rows);
    if (shown === this.shown) return;
    this.shown = shown;
    this.tbody.replaceChildren(...rows.map(memberRow));
    const alive = rows.filter((m) => m.Status === 1).length;
    this.counter.textContent = `${alive} alive of ${rows.length}`;
  }
}

function memberRow(m) {
  const status = statusName(m.Status);
  const tags = Object.entries(m.Tags || {}).sort(([a], [b]) => a.localeCompare(b));
  const tr = el("tr", { "data-name": m.Name, "data-status": status },
    el("th", { scope: "row" }, m.Name),
    el("td", { "data-label": "Address" }, `${m.Addr}:${m.Port}`),
    el("td", { class: "status", "data-label": "Status" },
      el("span", { class: `badge ${status}` }, status)),
    el("td", { class: "tags", "data-label": "Tags" },
      ...tags.map(([k, v]) => el("span", { class: "tag" }, v === "" ? k : `${k}=${v}`))),
    el("td", { "data-label": "Protocol", title: `protocol ${m.ProtocolMin}–${m.ProtocolMax}, ` +
                      `delegate ${m.DelegateMin}–${m.DelegateMax} (current ${m.DelegateCur})` },
       String(m.ProtocolCur)),
  );
  return tr;
}
