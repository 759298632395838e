// The Playground: a chat request built from a form (model, system prompt, turns, parameters),
// streamed into #answer with live stats (#stats), tool calls, logprobs, "View code" and the
// completion's span/trace link. The conversation and settings live in this module, so they
// survive a visit to another view.
import { api, streamChat, el, getKey, ApiError } from "/ui/api.js";

const state = {
  model: "", system: "", messages: [], composer: "",
  params: { temperature: "", top_p: "", max_tokens: "", seed: "", stop: "", n: "",
            format: "none", schemaName: "answer", schema: '{\n  "type": "object",\n  "properties": {\n    "answer": {"type": "string", "maxLength": 200}\n  },\n  "required": ["answer"]\n}',
            tools: "", tool_choice: "", logprobs: false, top_logprobs: "", tags: "" },
};

let controller = null;  // the AbortController of the request in flight

// ---- building the request ------------------------------------------------------------------

class FieldError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

function number(name, value, { integer = false } = {}) {
  const text = String(value).trim();
  if (text === "") return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new FieldError(name, `${name} must be ${integer ? "an integer" : "a number"}`);
  }
  return n;
}

function parseJson(name, text) {
  try { return JSON.parse(text); } catch (e) { throw new FieldError(name, `${name}: ${e.message}`); }
}

// The request body from the form; `pending` is the composer's text (a new user turn) if any.
function buildBody(pending) {
  const p = state.params;
  const messages = [];
  if (state.system.trim()) messages.push({ role: "system", content: state.system });
  for (const m of state.messages) messages.push({ role: m.role, content: m.content });
  if (pending && pending.trim()) messages.push({ role: "user", content: pending });
  const body = { model: state.model || undefined, messages };
  const fields = {
    temperature: number("temperature", p.temperature),
    top_p: number("top_p", p.top_p),
    max_tokens: number("max_tokens", p.max_tokens, { integer: true }),
    seed: number("seed", p.seed, { integer: true }),
    n: number("n", p.n, { integer: true }),
  };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) body[k] = v;
  const stops = p.stop.split(",").map(s => s.trim()).filter(Boolean);
  if (stops.length > 4) throw new FieldError("stop", "stop: at most 4 strings");
  if (stops.length) body.stop = stops.length === 1 ? stops[0] : stops;
  if (p.format === "json_object") body.response_format = { type: "json_object" };
  if (p.format === "json_schema") {
    const schema = parseJson("schema", p.schema);
    body.response_format = { type: "json_schema",
                             json_schema: { name: p.schemaName.trim() || "answer", schema, strict: true } };
  }
  if (p.tools.trim()) {
    const tools = parseJson("tools", p.tools);
    if (!Array.isArray(tools)) throw new FieldError("tools", "tools: must be a JSON array");
    body.tools = tools;
    if (p.tool_choice) body.tool_choice = p.tool_choice;
  }
  if (p.logprobs) {
    body.logprobs = true;
    const top = number("top_logprobs", p.top_logprobs, { integer: true });
    if (top !== undefined) body.top_logprobs = top;
  }
  if (p.tags.trim()) {
    const tags = parseJson("tags", p.tags);
    if (typeof tags !== "object" || tags === null || Array.isArray(tags)) {
      throw new FieldError("tags", "tags: must be a JSON object");
    }
    body.tags = tags;
  }
  return body;
}

// ---- "View code" -----------------------------------------------------------------------------

function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

function curlCode(body) {
  const lines = [`curl ${location.origin}/v1/chat/completions \\`, `  -H "Content-Type: application/json" \\`];
  if (getKey()) lines.push(`  -H "Authorization: Bearer $RILL_API_KEY" \\`);
  lines.push(`  -d ${shellQuote(JSON.stringify({ ...body, stream: true }, null, 2))}`);
  return lines.join("\n");
}

function pyLiteral(v, indent = "") {
  const next = indent + "    ";
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number" || typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    if (!v.length) return "[]";
    return "[\n" + v.map(x => next + pyLiteral(x, next)).join(",\n") + ",\n" + indent + "]";
  }
  const keys = Object.keys(v);
  if (!keys.length) return "{}";
  return "{\n" + keys.map(k => `${next}${JSON.stringify(k)}: ${pyLiteral(v[k], next)}`).join(",\n") + ",\n" + indent + "}";
}

function pythonCode(body) {
  const { tags, ...known } = body;
  const args = Object.entries(known).map(([k, v]) => `    ${k}=${pyLiteral(v, "    ")},`);
  args.push("    stream=True,");
  if (tags !== undefined) args.push(`    extra_body={"tags": ${pyLiteral(tags, "    ")}},`);
  return [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(location.origin + "/v1")}, ` +
      `api_key=${getKey() ? '"YOUR_API_KEY"' : '"unused"'})`,
    "",
    "stream = client.chat.completions.create(",
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
    "print()",
  ].join("\n");
}

// ---- rendering the answer --------------------------------------------------------------------

function probColour(p) {
  // red (unlikely) -> yellow -> green (likely), light enough to read dark text on
  return `hsl(${Math.round(Math.max(0, Math.min(1, p)) * 120)}, 75%, 84%)`;
}

function pct(logprob) { return `${(Math.exp(logprob) * 100).toFixed(1)}%`; }

function showToken(s) { return JSON.stringify(s).slice(1, -1) || "∅"; }

let tooltip = null;
function tooltipFor(span, entry) {
  if (!tooltip) {
    tooltip = el("div", { class: "pg-tooltip", role: "tooltip", id: "pg-tooltip" });
    document.body.append(tooltip);
  }
  const rows = (entry.top_logprobs || []).map(alt =>
    el("div", { class: "pg-alt" + (alt.token === entry.token ? " chosen" : "") },
       el("code", {}, showToken(alt.token)), el("span", {}, pct(alt.logprob))));
  tooltip.replaceChildren(
    el("div", { class: "pg-alt chosen" }, el("code", {}, showToken(entry.token)), el("span", {}, pct(entry.logprob))),
    rows.length ? el("div", { class: "muted small" }, "alternatives") : null, ...rows);
  const r = span.getBoundingClientRect();
  tooltip.style.left = `${Math.max(4, Math.min(window.scrollX + r.left, window.scrollX + innerWidth - 240))}px`;
  tooltip.style.top = `${window.scrollY + r.bottom + 4}px`;
  tooltip.hidden = false;
}
function hideTooltip() { if (tooltip) tooltip.hidden = true; }

function tokenSpan(entry) {
  const p = Math.exp(entry.logprob);
  const alts = (entry.top_logprobs || []).map(a => `${showToken(a.token)} ${pct(a.logprob)}`).join("\n");
  const span = el("span", { class: "token", tabindex: "0", "data-prob": p.toFixed(4),
                            title: `${showToken(entry.token)} ${pct(entry.logprob)}` + (alts ? `\nalternatives:\n${alts}` : ""),
                            "aria-describedby": "pg-tooltip" }, entry.token);
  span.style.background = probColour(p);
  span.addEventListener("mouseenter", () => tooltipFor(span, entry));
  span.addEventListener("focus", () => tooltipFor(span, entry));
  span.addEventListener("mouseleave", hideTooltip);
  span.addEventListener("blur", hideTooltip);
  return span;
}

function choiceBlock(answer, index, n) {
  const content = el("div", { class: "pg-content" });
  const calls = el("div", { class: "pg-calls stack" });
  const foot = el("div", { class: "muted small pg-finish" });
  const block = el("div", { class: "pg-choice stack", "data-index": String(index) },
                   n > 1 ? el("div", { class: "muted small" }, `choice ${index}`) : null, content, calls, foot);
  answer.append(block);
  return { block, content, calls, foot, text: "", tools: [], logprobs: false };
}

function renderCalls(choice) {
  choice.calls.replaceChildren(...choice.tools.filter(Boolean).map(call => {
    let args = call.arguments;
    try { args = JSON.stringify(JSON.parse(call.arguments), null, 2); } catch { /* still streaming */ }
    return el("div", { class: "pg-call" },
              el("div", {}, el("span", { class: "tag" }, "tool call"), " ", el("strong", {}, call.name || "?"),
                 call.id ? el("span", { class: "muted small" }, ` ${call.id}`) : null),
              el("pre", {}, args));
  }));
}

// ---- the view --------------------------------------------------------------------------------

export async function render(root) {
  const errorBox = el("div", { class: "error", id: "pg-error", role: "alert", hidden: true });
  const answer = el("div", { id: "answer", class: "pg-answer", "data-state": "idle", "aria-live": "polite" },
                    el("span", { class: "muted" }, "The answer appears here."));
  const stats = el("div", { id: "stats", class: "muted small", "data-state": "idle" });
  const traceLink = el("div", { id: "trace-link", class: "small" });
  const codeBox = el("div", { id: "code", class: "stack", hidden: true });

  // model picker
  const modelSelect = el("select", { id: "model", "aria-label": "model" });
  modelSelect.addEventListener("change", () => { state.model = modelSelect.value; });

  // system prompt
  const system = el("textarea", { id: "system", rows: "2", placeholder: "You are a helpful assistant." });
  system.value = state.system;
  system.addEventListener("input", () => { state.system = system.value; });

  // message list
  const list = el("div", { id: "messages", class: "stack" });
  function drawMessages() {
    list.replaceChildren(...state.messages.map((m, i) => {
      const role = el("select", { class: "pg-role", "aria-label": `message ${i + 1} role` },
                      ...["user", "assistant"].map(r => el("option", { value: r, selected: r === m.role }, r)));
      role.addEventListener("change", () => { m.role = role.value; });
      const text = el("textarea", { class: "pg-message", rows: "2", "aria-label": `message ${i + 1} text` });
      text.value = m.content;
      text.addEventListener("input", () => { m.content = text.value; });
      const remove = el("button", { class: "btn small", type: "button", title: "Remove this turn",
                                    "aria-label": `remove message ${i + 1}`,
                                    onclick: () => { state.messages.splice(i, 1); drawMessages(); } }, "✕");
      return el("div", { class: "pg-turn", "data-role": m.role }, el("div", { class: "row" }, role, remove), text);
    }));
  }
  const addTurn = el("button", { class: "btn small", type: "button", id: "add-message",
    onclick: () => {
      const last = state.messages[state.messages.length - 1];
      state.messages.push({ role: last?.role === "user" ? "assistant" : "user", content: "" });
      drawMessages(); list.lastElementChild?.querySelector("textarea")?.focus();
    } }, "+ Add turn");
  const clear = el("button", { class: "btn small", type: "button", id: "clear",
    onclick: () => { state.messages = []; drawMessages(); } }, "Clear conversation");

  // composer
  const composer = el("textarea", { id: "composer", rows: "3", placeholder: "Message (Enter sends, Shift+Enter: new line)",
                                    "aria-label": "message" });
  composer.value = state.composer;
  composer.addEventListener("input", () => { state.composer = composer.value; });
  composer.addEventListener("keydown", e => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  const sendBtn = el("button", { class: "btn primary", type: "button", id: "send", onclick: () => send() }, "Send");
  const stopBtn = el("button", { class: "btn", type: "button", id: "stop", disabled: true,
                                 onclick: () => controller?.abort() }, "Stop");
  const codeBtn = el("button", { class: "btn", type: "button", id: "view-code", "aria-expanded": "false",
                                 onclick: () => toggleCode() }, "View code");

  // parameters
  const p = state.params;
  const fieldErrors = {};
  function input(name, label, attrs = {}) {
    const node = el("input", { id: `p-${name}`, name, inputmode: "decimal", autocomplete: "off", ...attrs });
    node.value = p[name];
    node.addEventListener("input", () => { p[name] = node.value; });
    return el("div", { class: "stack pg-field" }, el("label", { for: `p-${name}` }, label), node, fieldError(name));
  }
  function fieldError(name) {
    return (fieldErrors[name] = el("div", { class: "error small", id: `p-${name}-error`, hidden: true }));
  }
  function textarea(name, label, placeholder) {
    const node = el("textarea", { id: `p-${name}`, class: "code", rows: "4", spellcheck: "false", placeholder });
    node.value = p[name];
    node.addEventListener("input", () => { p[name] = node.value; validateJson(name); });
    return el("div", { class: "stack pg-field" }, el("label", { for: `p-${name}` }, label), node, fieldError(name));
  }
  function validateJson(name) {
    const box = fieldErrors[name];
    box.hidden = true;
    if (!p[name].trim() || (name === "schema" && p.format !== "json_schema")) return;
    try { JSON.parse(p[name]); } catch (e) { box.textContent = `${name}: ${e.message}`; box.hidden = false; }
  }

  const format = el("select", { id: "p-format" },
                    ...["none", "json_object", "json_schema"].map(f => el("option", { value: f, selected: f === p.format }, f)));
  const schemaName = el("input", { id: "p-schema-name", "aria-label": "schema name", placeholder: "schema name" });
  schemaName.value = p.schemaName;
  schemaName.addEventListener("input", () => { p.schemaName = schemaName.value; });
  const schemaBox = el("div", { class: "stack", id: "schema-editor" }, schemaName,
                       textarea("schema", "JSON schema"));
  const showSchema = () => { schemaBox.hidden = p.format !== "json_schema"; validateJson("schema"); };
  format.addEventListener("change", () => { p.format = format.value; showSchema(); });

  const toolChoice = el("select", { id: "p-tool_choice" },
                        ...["", "auto", "none", "required"].map(c => el("option", { value: c, selected: c === p.tool_choice }, c || "(default: auto)")));
  toolChoice.addEventListener("change", () => { p.tool_choice = toolChoice.value; });

  const logprobs = el("input", { id: "p-logprobs", type: "checkbox", checked: p.logprobs, style: "width:auto" });
  const topLogprobs = input("top_logprobs", "top_logprobs (0–20)", { placeholder: "e.g. 5" });
  const syncLogprobs = () => { topLogprobs.querySelector("input").disabled = !p.logprobs; };
  logprobs.addEventListener("change", () => { p.logprobs = logprobs.checked; syncLogprobs(); });

  const params = el("section", { class: "panel stack pg-params", "aria-label": "parameters" },
    el("h2", {}, "Parameters"),
    el("div", { class: "pg-pair" },
       input("temperature", "temperature", { placeholder: "1.0" }), input("top_p", "top_p", { placeholder: "1.0" })),
    el("div", { class: "pg-pair" },
       input("max_tokens", "max_tokens", { inputmode: "numeric", placeholder: "unlimited" }),
       input("seed", "seed", { inputmode: "numeric", placeholder: "random" })),
    el("div", { class: "pg-pair" },
       input("n", "n (choices)", { inputmode: "numeric", placeholder: "1" }),
       input("stop", "stop (comma-separated, ≤ 4)", { inputmode: "text" })),
    el("div", { class: "stack pg-field" }, el("label", { for: "p-format" }, "response_format"), format),
    schemaBox,
    textarea("tools", "tools (JSON array)", '[{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}]'),
    el("div", { class: "stack pg-field" }, el("label", { for: "p-tool_choice" }, "tool_choice (with tools)"), toolChoice),
    el("div", { class: "row" }, logprobs, el("label", { for: "p-logprobs" }, "logprobs")),
    topLogprobs,
    textarea("tags", "tags (JSON object, stored on the span)", '{"project": "demo"}'),
  );
  showSchema(); syncLogprobs();

  const conversation = el("section", { class: "panel stack", "aria-label": "conversation" },
    el("div", { class: "row" }, el("label", { for: "model" }, "Model"), modelSelect),
    el("div", { class: "stack" }, el("label", { for: "system" }, "System prompt"), system),
    el("div", { class: "stack" }, el("div", { class: "row" }, el("label", {}, "Messages"), addTurn, clear), list),
    composer,
    el("div", { class: "row" }, sendBtn, stopBtn, codeBtn, el("span", { class: "muted small pg-hint" }, "Enter sends · Shift+Enter new line")),
    errorBox,
    el("div", { class: "stack" }, el("div", { class: "row pg-answer-head" }, el("strong", {}, "Answer"), stats), answer, traceLink),
    codeBox,
  );
  root.append(el("div", { class: "grid pg" }, conversation, params));
  drawMessages();

  // models
  try {
    const models = await api("/v1/models");
    const ids = (models.data || []).map(m => m.id);
    modelSelect.replaceChildren(...ids.map(id => el("option", { value: id, selected: id === state.model }, id)));
    if (!ids.includes(state.model)) state.model = ids[0] || "";
  } catch (e) {
    modelSelect.replaceChildren(el("option", { value: "" }, "(models unavailable)"));
    showError(e);
  }

  function showError(e) {
    errorBox.replaceChildren();
    if (!e) { errorBox.hidden = true; return; }
    errorBox.hidden = false;
    errorBox.append(el("strong", {}, e instanceof ApiError ? `Error ${e.status}: ` : "Error: "), e.message || String(e));
    if (e.param) errorBox.append(" ", el("span", { class: "tag" }, `param: ${e.param}`));
    if (e.field && fieldErrors[e.field]) {
      fieldErrors[e.field].textContent = e.message; fieldErrors[e.field].hidden = false;
    }
  }

  function toggleCode(force) {
    const open = force ?? codeBox.hidden;
    codeBtn.setAttribute("aria-expanded", String(open));
    codeBox.hidden = !open;
    if (!open) return;
    try {
      const body = buildBody(composer.value);
      body.stream_options = { include_usage: true };
      codeBox.replaceChildren(
        el("strong", {}, "curl"), el("pre", { id: "code-curl" }, curlCode(body)),
        el("strong", {}, "Python (openai)"), el("pre", { id: "code-python" }, pythonCode(body)));
    } catch (e) { codeBox.replaceChildren(el("div", { class: "error" }, e.message)); }
  }

  function setStreaming(on) {
    sendBtn.disabled = on; stopBtn.disabled = !on;
  }

  async function send() {
    if (controller) return;
    for (const box of Object.values(fieldErrors)) box.hidden = true;
    showError(null);
    let body;
    try {
      body = buildBody(composer.value);
      if (!body.messages.some(m => m.role !== "system")) throw new FieldError(null, "write a message first");
    } catch (e) { showError(e); return; }
    body.stream_options = { include_usage: true };
    if (composer.value.trim()) {
      state.messages.push({ role: "user", content: composer.value });
      composer.value = ""; state.composer = ""; drawMessages();
    }
    if (!codeBox.hidden) toggleCode(true);

    const n = body.n || 1;
    answer.replaceChildren();
    traceLink.replaceChildren();
    const choices = [];
    for (let i = 0; i < n; i++) choices.push(choiceBlock(answer, i, n));
    answer.dataset.state = "streaming"; stats.dataset.state = "streaming";
    const started = performance.now();
    let first = null, chunks = 0, usage = null;
    const drawStats = (final) => {
      const now = performance.now();
      const parts = [];
      if (first !== null) parts.push(`TTFT ${Math.round(first - started)} ms`);
      const gen = (now - (first ?? now)) / 1000;
      const tokens = final && usage ? usage.completion_tokens : chunks;
      if (first !== null && gen > 0) parts.push(`${(tokens / gen).toFixed(1)} tok/s`);
      parts.push(`${tokens} ${final && usage ? "tokens" : "chunks"}`);
      if (final && usage) parts.push(`${usage.prompt_tokens} prompt tokens`);
      parts.push(`${((now - started) / 1000).toFixed(2)} s`);
      if (!final) parts.push("streaming…");
      stats.textContent = parts.join(" · ");
    };
    drawStats(false);
    const ticker = setInterval(() => drawStats(false), 250);

    controller = new AbortController();
    setStreaming(true);
    try {
      const headers = await streamChat(body, { signal: controller.signal, onChunk: chunk => {
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices || []) {
          const choice = choices[c.index] || (choices[c.index] = choiceBlock(answer, c.index, n));
          const d = c.delta || {};
          if (d.content) {
            if (first === null) first = performance.now();
            chunks += 1;
            choice.text += d.content;
            const lp = c.logprobs?.content;
            if (lp && lp.length) { choice.logprobs = true; choice.content.append(...lp.map(tokenSpan)); }
            else choice.content.append(d.content);
          }
          for (const t of d.tool_calls || []) {
            if (first === null) first = performance.now();
            chunks += 1;
            const call = choice.tools[t.index ?? 0] || (choice.tools[t.index ?? 0] = { id: "", name: "", arguments: "" });
            if (t.id) call.id = t.id;
            if (t.function?.name) call.name += t.function.name;
            if (t.function?.arguments) call.arguments += t.function.arguments;
            renderCalls(choice);
          }
          if (d.function_call) {
            if (first === null) first = performance.now();
            chunks += 1;
            const call = choice.tools[0] || (choice.tools[0] = { id: "", name: "", arguments: "" });
            if (d.function_call.name) call.name += d.function_call.name;
            if (d.function_call.arguments) call.arguments += d.function_call.arguments;
            renderCalls(choice);
          }
          if (c.finish_reason) choice.foot.textContent = `finish_reason: ${c.finish_reason}`;
        }
      } });
      clearInterval(ticker);
      drawStats(true);
      for (const choice of choices) {
        try {
          const parsed = JSON.parse(choice.text);
          if (typeof parsed === "object" && parsed !== null) {
            const pretty = el("pre", { class: "pg-json" }, JSON.stringify(parsed, null, 2));
            if (choice.logprobs) choice.content.after(pretty); else choice.content.replaceChildren(pretty);
          }
        } catch { /* not JSON: keep the text */ }
      }
      const first0 = choices[0];
      // a turn of tool calls only is not added: it would need tool results to continue
      if (first0 && first0.text) {
        state.messages.push({ role: "assistant", content: first0.text });
        drawMessages();
      }
      const spanId = headers.get("x-rill-span-id"), traceId = headers.get("x-rill-trace-id");
      if (spanId) {
        traceLink.replaceChildren("span ",
          el("a", { href: traceId ? `#/traces/${encodeURIComponent(traceId)}` : "#/traces", id: "span-link" }, spanId),
          traceId ? el("span", { class: "muted" }, ` (trace ${traceId})`) : null);
      }
      answer.dataset.state = "done"; stats.dataset.state = "done";
    } catch (e) {
      clearInterval(ticker);
      drawStats(true);
      if (e.name === "AbortError") {
        answer.dataset.state = "stopped"; stats.dataset.state = "stopped";
        stats.textContent += " · stopped";
        if (choices[0]?.text) { state.messages.push({ role: "assistant", content: choices[0].text }); drawMessages(); }
      } else {
        answer.dataset.state = "error"; stats.dataset.state = "error";
        showError(e);
      }
    } finally {
      controller = null;
      setStreaming(false);
      hideTooltip();
    }
  }
}
