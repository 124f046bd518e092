// The fire form: PUT /v1/event/fire/:name with the payload as body and the filters as query
// arguments; the agent's answer (the event, or its refusal text) is shown under the form.

import { AgentError, call, query } from "./api.js";

export function setupFire(form, result, onFired) {
  // Enter in a field fires; in the payload box it is a new line, and Ctrl+Enter fires
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const name = String(data.get("name")).trim();
    const filters = query({ node: data.get("node"), service: data.get("service"),
                            tag: data.get("tag") });
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.className = "result";
    result.textContent = "firing…";
    try {
      const resp = await call("PUT", `/v1/event/fire/${encodeURIComponent(name)}${filters}`,
                              { body: String(data.get("payload")) });
      const ev = await resp.json();
      result.className = "result ok";
      result.textContent = `Fired ${ev.Name} (ID ${ev.ID}, LTime ${ev.LTime})`;
      onFired(ev);
    } catch (err) {
      result.className = "result error";
      result.textContent = err instanceof AgentError
        ? `The agent refused (${err.status}): ${err.agentMessage}`
        : `No answer from the agent: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
}
