// Stored completions (`store: true`): a table with a metadata filter and pagination; a row opens
// the completion (its request's messages and the answer) in a detail panel.
import { api, ApiError, el } from "/ui/api.js";
import { clickableRow } from "/ui/traces.js";

const PAGE = 20;
const state = { metadata: "", cursors: [] };

function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.message : String(e?.message || e));
}
function answerOf(c) {
  const m = c.choices?.[0]?.message;
  if (!m) return "";
  if (typeof m.content === "string" && m.content) return m.content;
  if (m.tool_calls?.length) return m.tool_calls.map(t => `${t.function?.name}(${t.function?.arguments})`).join(", ");
  return m.refusal || "";
}
function firstWords(text, n = 12) {
  const words = text.trim().split(/\s+/);
  return words.slice(0, n).join(" ") + (words.length > n ? " …" : "");
}
function metaChips(meta) { return Object.entries(meta || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}=${v}`)); }

export async function render(root) {
  const input = el("input", { id: "filter-metadata", value: state.metadata, placeholder: "key=value (comma-separated)" });
  const form = el("form", { class: "row panel filters", id: "stored-filters" },
    el("div", { class: "stack field" }, el("label", { for: "filter-metadata" }, "Metadata"), input),
    el("div", { class: "row field-actions" }, el("button", { class: "btn primary", type: "submit", id: "stored-apply" }, "Apply")));
  const results = el("div", { class: "stack", id: "stored-results" });
  const detail = el("div", { class: "panel stack", id: "stored-detail" }, el("p", { class: "muted" }, "Select a completion to see it."));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); state.metadata = input.value.trim(); state.cursors = []; load(); });
  root.append(el("div", { class: "stack stored-view" }, el("h2", {}, "Stored completions"), form,
    el("div", { class: "grid" }, results, detail)));

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE), order: "desc" });
    for (const pair of state.metadata.split(",").map(s => s.trim()).filter(Boolean)) {
      const cut = pair.indexOf("=");
      if (cut <= 0) { results.replaceChildren(errorBox(new Error(`"${pair}" is not key=value`))); return; }
      q.set(`metadata[${pair.slice(0, cut).trim()}]`, pair.slice(cut + 1).trim());
    }
    const after = state.cursors[state.cursors.length - 1];
    if (after) q.set("after", after);
    results.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    let page;
    try { page = await api(`/v1/chat/completions?${q}`); } catch (e) { results.replaceChildren(errorBox(e)); return; }
    if (!page.data.length && !state.cursors.length) {
      results.replaceChildren(el("p", { class: "muted empty" }, state.metadata
        ? "No stored completions match this metadata."
        : "No stored completions yet: send a chat completion with store: true."));
      return;
    }
    const rows = page.data.map(c => {
      const row = clickableRow({ "data-completion-id": c.id }, () => {
        for (const r of rows) r.classList.toggle("selected", r === row);
        show(detail, c);
        if (matchMedia("(max-width: 760px)").matches) detail.scrollIntoView({ block: "start" });
      },
        el("td", { "data-label": "Id" }, el("code", {}, c.id)),
        el("td", { "data-label": "Model" }, c.model || ""),
        el("td", { "data-label": "Created" }, c.created ? new Date(c.created * 1000).toLocaleString() : ""),
        el("td", { "data-label": "Metadata" }, metaChips(c.metadata)),
        el("td", { "data-label": "Answer", class: "answer" }, firstWords(answerOf(c))));
      return row;
    });
    const table = el("table", { class: "table", id: "stored" },
      el("thead", {}, el("tr", {}, ...["Id", "Model", "Created", "Metadata", "Answer"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows));
    results.replaceChildren(el("div", { class: "table-wrap" }, table),
      el("div", { class: "row pager" },
        el("button", { class: "btn", type: "button", id: "stored-prev", disabled: !state.cursors.length,
          onclick: () => { state.cursors.pop(); load(); } }, "Previous"),
        el("button", { class: "btn", type: "button", id: "stored-next", disabled: !page.has_more,
          onclick: () => { state.cursors.push(page.last_id); load(); } }, "Next")));
  }
  await load();
}

let showing = 0;  // the latest click wins when messages arrive out of order
async function show(detail, c) {
  const mine = ++showing;
  detail.replaceChildren(el("h3", {}, el("code", {}, c.id)), el("p", { class: "muted" }, "Loading messages…"));
  const head = [el("h3", {}, el("code", {}, c.id)),
    el("div", { class: "row muted" }, el("span", {}, c.model || ""),
      c.usage ? el("span", {}, `${c.usage.total_tokens} tokens`) : null, metaChips(c.metadata))];
  let msgs = [];
  try {
    const page = await api(`/v1/chat/completions/${encodeURIComponent(c.id)}/messages?limit=100`);
    msgs = page.data || [];
  } catch (e) { if (mine === showing) detail.replaceChildren(...head, errorBox(e)); return; }
  if (mine !== showing) return;
  const bubble = (role, content) => el("div", { class: "message" }, el("span", { class: "tag role" }, role),
    el("pre", {}, typeof content === "string" ? content : JSON.stringify(content, null, 2)));
  detail.replaceChildren(...head,
    el("h4", {}, "Messages"),
    el("div", { class: "stack messages" }, msgs.map(m => bubble(m.role || "?", m.content ?? m))),
    el("h4", {}, "Answer"),
    el("div", { class: "stack messages", id: "stored-answer" }, bubble(c.choices?.[0]?.message?.role || "assistant", answerOf(c)),
      c.choices?.[0]?.finish_reason ? el("span", { class: "muted" }, `finish reason: ${c.choices[0].finish_reason}`) : null));
}
