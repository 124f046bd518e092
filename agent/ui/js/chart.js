// The activity chart: events per minute over the last hour (by the time they reached this
// page) as bars, member changes (join, failed, left) as marks on the same time axis. Inline
// SVG, redrawn when something arrives and every few seconds as time moves on.

import { clock, svg } from "./dom.js";

const MINUTE = 60_000;
const SPAN = 60; // minutes shown
const W = 600, H = 150; // viewBox; the SVG scales to its box
const LEFT = 34, RIGHT = 592, TOP = 12, BOTTOM = 120;

export class Activity {
  constructor(box) {
    this.box = box;
    this.arrivals = []; // ms, oldest first
    this.changes = []; // {time, kind, name}
    this.timer = setInterval(() => this.render(), 10_000);
    this.render();
  }

  event(time) {
    this.arrivals.push(time);
    this.render();
  }

  change(change) {
    this.changes.push(change);
    this.render();
  }

  render() {
    const end = Math.ceil((Date.now() + 1) / MINUTE) * MINUTE; // end of the current minute
    const start = end - SPAN * MINUTE;
    this.arrivals = this.arrivals.filter((t) => t >= start);
    this.changes = this.changes.filter((c) => c.time >= start);
    const counts = new Array(SPAN).fill(0);
    for (const t of this.arrivals) counts[Math.min(SPAN - 1, Math.floor((t - start) / MINUTE))]++;
    const busiest = Math.max(...counts);
    const peak = Math.max(1, busiest);
    const x = (t) => LEFT + ((t - start) / (SPAN * MINUTE)) * (RIGHT - LEFT);
    const y = (n) => BOTTOM - (n / peak) * (BOTTOM - TOP);
    const slot = (RIGHT - LEFT) / SPAN;

    const bars = counts.map((n, i) => n === 0 ? null : svg("rect", {
      class: "bar", "data-count": n, x: (LEFT + i * slot + 1).toFixed(1), y: y(n).toFixed(1),
      width: (slot - 2).toFixed(1), height: (BOTTOM - y(n)).toFixed(1),
    }, svg("title", {}, `${clock(start + i * MINUTE, false)}: ${n} event${n === 1 ? "" : "s"}`)))
      .filter(Boolean);
    const marks = this.changes.map((c) => svg("g", { class: `mark ${c.kind}` },
      svg("line", { x1: x(c.time), x2: x(c.time), y1: TOP - 4, y2: BOTTOM }),
      svg("circle", { cx: x(c.time), cy: TOP - 4, r: 4 }),
      svg("title", {}, `${clock(c.time)} ${c.name} ${c.kind}`)));
    const anchor = (m) => (m === 0 ? "start" : m === SPAN ? "end" : "middle");
    const ticks = [0, 15, 30, 45, 60].map((m) => svg("text", {
      x: x(start + m * MINUTE), y: BOTTOM + 16, "text-anchor": anchor(m),
    }, m === SPAN ? "now" : `−${SPAN - m} min`));

    const total = this.arrivals.length;
    const summary = `${total} event${total === 1 ? "" : "s"} and ${this.changes.length} member ` +
      `change${this.changes.length === 1 ? "" : "s"} in the last hour; busiest minute: ${busiest}`;
    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary,
      "data-events": total, "data-changes": this.changes.length,
    },
      svg("line", { class: "axis", x1: LEFT, x2: RIGHT, y1: BOTTOM, y2: BOTTOM }),
      svg("text", { x: LEFT - 6, y: TOP + 4, "text-anchor": "end" }, String(peak)),
      svg("text", { x: LEFT - 6, y: BOTTOM, "text-anchor": "end" }, "0"),
      ...bars, ...marks, ...ticks,
      svg("text", { class: "note", x: LEFT, y: H - 2 },
        "by arrival at this page; events listed as \u201cearlier\u201d are not counted"));
    this.box.replaceChildren(chart);
  }
}
