// Keeping the page live from the agent's event stream (Server-Sent Events on
// /v1/event/stream, topics Event and Node).
//
// A session: the bus's last Index L (from /v1/agent/self), then a snapshot (members, event
// list), then the stream. The first session streams from L. After the connection broke (the
// agent restarted, say), the next session resumes from the last Index the page saw, as long as
// the agent still counts from there: events missed meanwhile are replayed, and the event list
// drops IDs it already shows, so nothing is lost or repeated; member records up to L are
// skipped, the snapshot already has the newer state. An agent that lost its log (restarted
// without a data dir: its Index is below ours), or a Gap (the records we asked for are gone),
// means starting from L, with the snapshot covering the hole.

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

// h: {self(body), members(list), events(list, live), event(ev), node(type, member)}
export async function follow(signal, health, h) {
  let pause = RETRY_FIRST_MS;
  let first = true;
  let seen = null; // Index of the last record this page received
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
      // the snapshot covers everything up to `last`; the stream brings what came after
      const from = seen !== null && seen <= last ? seen : last;
      seen = from;
      const end = await stream(from, last, signal, health, h, (index) => {
        if (index !== null) seen = index;
        pause = RETRY_FIRST_MS; // it works again
      });
      if (end === "gap") {
        seen = null;
        continue;
      }
      if (end === "lost") health.failed("stream", new Error("connection lost"));
    } catch (e) {
      if (signal.aborted) return;
      health.failed("snapshot", e);
      if (e instanceof AgentError) pause = RETRY_MAX_MS; // a refusal (403) lasts a while
    }
    await sleep(pause, signal).catch(() => {});
    pause = Math.min(pause * 2, RETRY_MAX_MS);
  }
}

function streamURL(index) {
  const params = new URLSearchParams([["topic", "Event"], ["topic", "Node"],
                                      ["index", String(index)]]);
  const token = getToken();
  if (token) params.set("token", token);
  return `/v1/event/stream?${params}`;
}

// One EventSource for the records after `from`. Resolves with "gap", "lost" (connection
// broken) or "stopped" (aborted); rejects with the agent's answer when it refuses.
// `last`: the snapshot's Index; member records up to it are older than the snapshot.
// onIndex(i) after each record, and onIndex(null) once connected.
function stream(from, last, signal, health, h, onIndex) {
  return new Promise((resolve, reject) => {
    const url = streamURL(from);
    const source = new EventSource(url);
    const stop = (settle, value) => {
      source.close();
      signal.removeEventListener("abort", onAbort);
      settle(value);
    };
    const onAbort = () => stop(resolve, "stopped");
    signal.addEventListener("abort", onAbort);
    const read = (handler) => (msg) => {
      const record = JSON.parse(msg.data);
      handler(record);
      if (record.Topic !== "Stream") onIndex(record.Index);
    };
    source.addEventListener("open", () => {
      health.ok("stream");
      onIndex(null);
    });
    source.addEventListener("Event", read((r) => h.event(r.Payload)));
    source.addEventListener("Node", read((r) => {
      if (r.Index > last) h.node(r.Type, r.Payload);
    }));
    source.addEventListener("Stream", read((r) => {
      if (r.Type === "Gap") stop(resolve, "gap");
      // "Closed" (we read too slowly): the agent ends the response, which is "lost" below
    }));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        stop(resolve, "lost"); // we resume ourselves, after a fresh snapshot
        return;
      }
      // the agent answered with an error status: ask again to learn why
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
