// Keeping the page live from the agent's event stream (Server-Sent Events on
// /v1/event/stream, topics Event and Node).
//
// A session starts with a snapshot: the bus's last Index L from /v1/agent/self, then the
// members and the event list, then the stream from Index L. Whatever happened after L is
// replayed on top of the snapshot: nothing is lost, and the event list drops IDs it already
// shows, so nothing is repeated. While the session lasts, EventSource reconnects by itself
// and resumes with Last-Event-ID (the agent keeps its Indexes across a restart). A Gap (the
// agent no longer holds what we asked for, e.g. it restarted without a data dir) or a
// refusal starts a new session.

import { AgentError, getJSON, getToken, sleep } from "./api.js";

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 8000;

// Report on the connection: a Map of feed name -> error (an AgentError when the agent
// refused, another Error when it did not answer); empty when all is well.
export class Health {
  constructor(onReport) {
    this.onReport = onReport;
    this.errors = new Map();
  }

  ok(feed) {
    if (this.errors.delete(feed) || this.errors.size === 0) this.onReport(this.errors);
  }

  failed(feed, error) {
    this.errors.set(feed, error);
    this.onReport(this.errors);
  }
}

// h: {self(body), members(list), events(list, live), event(ev, index), node(type, member)}
export async function follow(signal, health, h) {
  let pause = RETRY_FIRST_MS;
  let first = true;
  while (!signal.aborted) {
    try {
      const { body: self } = await getJSON("/v1/agent/self", { signal });
      const last = Number(self.Stats.bus.last_index);
      h.self(self);
      const [members, events] = await Promise.all([
        getJSON("/v1/agent/members", { signal }), getJSON("/v1/event/list", { signal })]);
      h.members(members.body);
      h.events(events.body, !first);
      first = false;
      health.ok("snapshot");
      pause = RETRY_FIRST_MS;
      await stream(last, signal, health, h); // returns on a Gap, throws when refused
    } catch (e) {
      if (signal.aborted) return;
      health.failed("snapshot", e);
      // a refusal (403) will not cure itself quickly: wait the longest
      await sleep(e instanceof AgentError ? RETRY_MAX_MS : pause, signal).catch(() => {});
      pause = Math.min(pause * 2, RETRY_MAX_MS);
    }
  }
}

function streamURL(index) {
  const params = new URLSearchParams([["topic", "Event"], ["topic", "Node"],
                                      ["index", String(index)]]);
  const token = getToken();
  if (token) params.set("token", token);
  return `/v1/event/stream?${params}`;
}

// One EventSource from `index` on, until a Gap (resolves) or the agent refuses (rejects).
function stream(index, signal, health, h) {
  return new Promise((resolve, reject) => {
    const url = streamURL(index);
    const source = new EventSource(url);
    const stop = (settle, value) => {
      source.close();
      signal.removeEventListener("abort", onAbort);
      settle(value);
    };
    const onAbort = () => stop(resolve);
    signal.addEventListener("abort", onAbort);
    const read = (handler) => (msg) => handler(JSON.parse(msg.data));
    source.addEventListener("open", () => health.ok("stream"));
    source.addEventListener("Event", read((r) => h.event(r.Payload, r.Index)));
    source.addEventListener("Node", read((r) => h.node(r.Type, r.Payload)));
    source.addEventListener("Stream", read((r) => {
      if (r.Type === "Gap") stop(resolve); // start over from a fresh snapshot
      // "Closed" (we read too slowly): the agent ends the response and EventSource
      // reconnects from the last id it saw
    }));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CONNECTING) {
        health.failed("stream", new Error("connection lost"));
        return;
      }
      // CLOSED: the agent answered with an error status; ask again to learn why
      probe(url).then((err) => stop(reject, err), (err) => stop(reject, err));
    });
  });
}

// Why did the stream request fail? The same request through fetch shows the agent's answer.
async function probe(url) {
  const ctl = new AbortController();
  const headers = { Accept: "text/event-stream" };
  const resp = await fetch(url, { headers, signal: ctl.signal, cache: "no-store" });
  if (resp.ok) {
    ctl.abort();
    return new Error("the event stream ended");
  }
  return new AgentError(resp.status, (await resp.text()).trim());
}
