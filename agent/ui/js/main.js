// Wires the page together: who we talk to, the token, the live feeds, the form and filter.

import { AgentError, getToken, setToken } from "./api.js";
import { Activity } from "./chart.js";
import { EventList } from "./events.js";
import { Health, follow } from "./feeds.js";
import { setupFire } from "./fire.js";
import { Members } from "./members.js";

const $ = (id) => document.getElementById(id);

let self = null; // this agent's node name, once known
let feeds = null; // AbortController of the running feeds

const activity = new Activity($("chart"));
const events = new EventList($("events").tBodies[0], $("events-count"), (t) => activity.event(t));
const members = new Members($("members").tBodies[0], $("members-count"), (c) => activity.change(c));

function report(errors) {
  const conn = $("conn");
  const problem = $("problem");
  if (errors.size === 0) {
    conn.dataset.state = "live";
    conn.textContent = "live";
    problem.hidden = true;
    return;
  }
  const [feed, error] = errors.entries().next().value;
  const what = feed === "stream" ? "the event stream" : "the cluster's state";
  const refused = error instanceof AgentError;
  conn.dataset.state = refused ? "refused" : "down";
  conn.textContent = refused ? "refused" : "agent unreachable, retrying…";
  problem.hidden = false;
  problem.textContent = refused
    ? `The agent refused ${what} (${error.status}): ${error.agentMessage}` +
      (error.status === 403 ? " (check the ACL token)" : "")
    : `No answer from the agent for ${what} (${error.message}); retrying.`;
}

function showSelf(body) {
  self = body.Config.NodeName;
  $("agent-name").textContent = `${self} · ${body.Config.Datacenter}`;
  document.title = `rumor · ${self}`;
}

function start() {
  if (feeds) feeds.abort();
  feeds = new AbortController();
  follow(feeds.signal, new Health(report), {
    self: showSelf,
    members: (list) => members.replaceAll(list),
    events: (list, live) => {
      const now = Date.now();
      for (const ev of list) events.add(ev, live ? now : null);
    },
    event: (ev) => events.add(ev, Date.now()),
    node: (type, member) => members.apply(type, member),
  });
}

$("token").value = getToken();
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken($("token").value.trim());
  start();
});
$("event-filter").addEventListener("input", (e) => events.setFilter(e.target.value));
setupFire($("fire-form"), $("fire-result"), (ev) => {
  if (self) events.setOrigin(ev.ID, self);
});
start();
