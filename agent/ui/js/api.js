// Talking to the agent that served this page: the ACL token (kept in this tab's
// sessionStorage), fetch() with X-Consul-Token, and turning refusals into readable errors.

const TOKEN_KEY = "rumor.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// An answer the agent refused: `status` is the HTTP status, `message` the agent's own text.
export class AgentError extends Error {
  constructor(status, message) {
    super(message ? `${status} ${message}` : `HTTP ${status}`);
    this.status = status;
    this.agentMessage = message;
  }
}

// fetch() against the agent with the token; throws AgentError on a non-2xx answer and lets
// network errors (agent down) and aborts through as they are.
export async function call(method, path, { body, signal } = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers["X-Consul-Token"] = token;
  const resp = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  if (!resp.ok) {
    const text = (await resp.text()).trim();
    throw new AgentError(resp.status, text);
  }
  return resp;
}

export async function getJSON(path, options) {
  const resp = await call("GET", path, options);
  return { body: await resp.json(), headers: resp.headers };
}

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== undefined && value !== null) q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

// Wait `ms`, or less if `signal` aborts (then reject with its reason).
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); },
                              { once: true });
    }
  });
}
