// The API as the page uses it: JSON calls and a streamed chat completion, with the API key
// (kept in localStorage) as a Bearer header when one is set.

const KEY = "rill.apiKey";

export function getKey() { return localStorage.getItem(KEY) || ""; }
export function setKey(value) { value ? localStorage.setItem(KEY, value) : localStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status; this.param = error?.param ?? null; this.code = error?.code ?? null;
  }
}

function headers(extra = {}) {
  const out = { "content-type": "application/json", ...extra };
  const key = getKey();
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  return new ApiError(response.status, body?.error);
}

// JSON call: api("/v1/models"), api("/v1/spans", {method: "POST", body: {...}})
export async function api(path, { method = "GET", body, signal } = {}) {
  const response = await fetch(path, { method, headers: headers(), signal,
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

// A streamed chat completion: onChunk(chunk) for each chat.completion.chunk; resolves with the
// response headers (x-rill-span-id) once [DONE] came; rejects with ApiError on an error answer
// or an in-stream error event.
export async function streamChat(body, { onChunk, signal } = {}) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers({ accept: "text/event-stream" }), signal,
    body: JSON.stringify({ ...body, stream: true }) });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
      if (!data) continue;  // a keep-alive comment
      if (data === "[DONE]") return response.headers;
      const obj = JSON.parse(data);
      if (obj.error) throw new ApiError(500, obj.error);
      onChunk?.(obj);
    }
  }
  throw new ApiError(502, { message: "the stream ended without [DONE]" });
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
