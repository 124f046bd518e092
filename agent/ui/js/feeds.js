// Keeping the page live: events through Consul's blocking queries on /v1/event/list (the
// request parks in the agent until the list changes), members by asking every second.
// Both reconnect by themselves, with a growing pause while the agent does not answer.

import { AgentError, getJSON, query, sleep } from "./api.js";

const WAIT = "5m"; // how long one blocking query may park in the agent
const MEMBERS_EVERY_MS = 1000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 8000;

// Report on the connection: state is "live" or "down"; error is an AgentError (the agent
// refused), another Error (no answer) or null.
export class Health {
  constructor(onReport) {
    this.onReport = onReport;
    this.errors = new Map(); // feed name -> error
  }

  ok(feed) {
    this.errors.delete(feed);
    this.onReport(this.errors);
  }

  failed(feed, error) {
    this.errors.set(feed, error);
    this.onReport(this.errors);
  }
}

async function retrying(name, health, signal, step) {
  let pause = RETRY_FIRST_MS;
  while (!signal.aborted) {
    try {
      await step();
      health.ok(name);
      pause = RETRY_FIRST_MS;
    } catch (e) {
      if (signal.aborted) return;
      health.failed(name, e);
      // a refusal (403) will not cure itself quickly: wait the longest
      await sleep(e instanceof AgentError ? RETRY_MAX_MS : pause, signal).catch(() => {});
      pause = Math.min(pause * 2, RETRY_MAX_MS);
    }
  }
}

// Calls onEvents(list, live) with the agent's whole list each time it changes; live is false
// only for the list found when the page first connects.
export function followEvents(signal, health, onEvents) {
  let index = ""; // a uint64 as text: JavaScript numbers would round it
  let first = true;
  return retrying("events", health, signal, async () => {
    const path = `/v1/event/list${query(index ? { index, wait: WAIT } : {})}`;
    const { body, headers } = await getJSON(path, { signal });
    // Consul's event index is a digest of the newest event, not a counter: any change (also
    // a smaller one, after the agent restarted) means "new list"; the list dedupes by ID.
    index = headers.get("X-Consul-Index") || "";
    onEvents(body, !first);
    first = false;
  });
}

export function followMembers(signal, health, onMembers) {
  let first = true;
  return retrying("members", health, signal, async () => {
    if (!first) await sleep(MEMBERS_EVERY_MS, signal);
    first = false;
    const { body } = await getJSON("/v1/agent/members", { signal });
    onMembers(body);
  });
}
