// The trace browser: #/traces (a filtered, paginated list) and #/traces/<id> (the span tree with
// a timeline and a span's details).
import { api, ApiError, el } from "/ui/api.js";

const PAGE = 25;

function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "running";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}
function tagChips(tags) {
  return Object.entries(tags || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`));
}
function statusTag(status) { return el("span", { class: `tag status-${status}` }, status); }
function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, e instanceof ApiError ? `${e.message}${e.param ? ` (${e.param})` : ""}` : String(e?.message || e));
}
// A clickable row that the keyboard can reach: Tab to it, Enter (or Space) opens.
export function clickableRow(attrs, onOpen, ...cells) {
  const tr = el("tr", { class: "clickable", tabindex: "0", ...attrs, onclick: onOpen,
    onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onOpen(); } } }, ...cells);
  return tr;
}
function toUnix(value) { return value ? String(new Date(value).getTime() / 1000) : ""; }

export async function render(root, traceId) {
  return traceId ? renderTrace(root, traceId) : renderList(root);
}

// ---- list ----
const state = { filters: { model: "", tag: "", user: "", status: "", since: "", until: "" }, cursors: [] };

async function renderList(root) {
  const f = state.filters;
  const input = (id, label, key, type = "text", placeholder = "") => el("div", { class: "stack field" },
    el("label", { for: id }, label),
    el("input", { id, type, value: f[key], placeholder }));
  const status = el("select", { id: "filter-status" },
    ...["", "ok", "error", "running"].map(s => el("option", { value: s, selected: f.status === s }, s || "any")));
  const form = el("form", { class: "filters panel", id: "trace-filters" },
    input("filter-model", "Model", "model"),
    input("filter-tag", "Tag (key:value)", "tag", "text", "suite:nightly"),
    input("filter-user", "User", "user"),
    el("div", { class: "stack field" }, el("label", { for: "filter-status" }, "Status"), status),
    input("filter-since", "Since", "since", "datetime-local"),
    input("filter-until", "Until", "until", "datetime-local"),
    el("div", { class: "row field-actions" },
      el("button", { class: "btn primary", type: "submit", id: "filter-apply" }, "Apply"),
      el("button", { class: "btn", type: "button", id: "filter-clear", onclick: () => {
        for (const k of Object.keys(f)) f[k] = "";
        state.cursors = []; root.replaceChildren(); renderList(root);
      } }, "Clear")));
  const results = el("div", { class: "stack", id: "traces-results" });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const k of ["model", "tag", "user", "since", "until"]) f[k] = form.querySelector(`#filter-${k}`).value.trim();
    f.status = status.value;
    state.cursors = [];
    load();
  });
  root.append(el("div", { class: "stack traces-view" }, el("h2", {}, "Traces"), form, results));

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (f.model) q.set("model", f.model);
    if (f.user) q.set("user", f.user);
    if (f.status) q.set("status", f.status);
    if (f.since) q.set("since", toUnix(f.since));
    if (f.until) q.set("until", toUnix(f.until));
    for (const t of f.tag.split(",").map(s => s.trim()).filter(Boolean)) q.append("tag", t);
    const after = state.cursors[state.cursors.length - 1];
    if (after) q.set("after", after);
    results.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    let page;
    try { page = await api(`/v1/traces?${q}`); } catch (e) { results.replaceChildren(errorBox(e)); return; }
    const total = page.meta?.total_count;
    const filtered = Object.values(f).some(Boolean);
    if (!page.data.length && !state.cursors.length) {
      results.replaceChildren(el("p", { class: "muted empty" },
        filtered ? "No traces match these filters." : "No traces yet: every request (chat, responses, messages, completions) becomes one."));
      return;
    }
    const table = el("table", { class: "table", id: "traces" },
      el("thead", {}, el("tr", {}, ...["Name", "Status", "Model", "User", "Tags", "Started", "Duration", "Spans", "Tokens"]
        .map(h => el("th", {}, h)))),
      el("tbody", {}, ...page.data.map(t => clickableRow({ "data-trace-id": t.id },
        () => { location.hash = `#/traces/${encodeURIComponent(t.id)}`; },
        el("td", { "data-label": "Name" }, t.name || t.id),
        el("td", { "data-label": "Status" }, statusTag(t.status)),
        el("td", { "data-label": "Model" }, t.model || ""),
        el("td", { "data-label": "User" }, t.user || ""),
        el("td", { "data-label": "Tags" }, tagChips(t.tags)),
        el("td", { "data-label": "Started" }, fmtTime(t.start_time)),
        el("td", { "data-label": "Duration" }, fmtMs(t.duration_ms)),
        el("td", { "data-label": "Spans" }, String(t.num_spans ?? "")),
        el("td", { "data-label": "Tokens" }, String(t.total_tokens ?? ""))))));
    const prev = el("button", { class: "btn", type: "button", id: "traces-prev", disabled: !state.cursors.length,
      onclick: () => { state.cursors.pop(); load(); } }, "Previous");
    const next = el("button", { class: "btn", type: "button", id: "traces-next", disabled: !page.has_more,
      onclick: () => { state.cursors.push(page.last_id); load(); } }, "Next");
    const start = state.cursors.length * PAGE;
    results.replaceChildren(
      el("div", { class: "table-wrap" }, table),
      el("div", { class: "row pager" }, prev, next,
        el("span", { class: "muted", id: "traces-total" },
          `${start + 1}–${start + page.data.length}${total !== undefined ? ` of ${total}` : ""} traces`)));
  }
  await load();
}

// ---- one trace ----
async function renderTrace(root, traceId) {
  const back = el("a", { href: "#/traces", class: "btn small" }, "← Traces");
  root.append(el("div", { class: "row" }, back));
  let trace;
  try { trace = await api(`/v1/traces/${encodeURIComponent(traceId)}`); }
  catch (e) { root.append(errorBox(e)); return; }
  const spans = trace.spans || [];
  const now = Date.now();
  const t0 = Math.min(...spans.map(s => Date.parse(s.start_time)), Date.parse(trace.start_time) || Infinity);
  const ends = spans.map(s => s.end_time ? Date.parse(s.end_time) : now);
  const t1 = Math.max(...ends, trace.end_time ? Date.parse(trace.end_time) : now);
  const span = Math.max(t1 - t0, 1);
  const detail = el("div", { class: "panel stack", id: "span-detail" }, el("p", { class: "muted" }, "Select a span to see its details."));

  const rows = spans.map((s, i) => {
    const start = Date.parse(s.start_time);
    const end = ends[i];
    const left = Math.max(0, (start - t0) / span * 100);
    const width = Math.max(0.5, Math.min(100 - left, (end - start) / span * 100));
    const open = () => {
      for (const r of rows) r.classList.toggle("selected", r === row);
      showSpan(detail, s);
      if (matchMedia("(max-width: 760px)").matches) detail.scrollIntoView({ block: "start" });
    };
    const row = el("div", { class: `span-row status-${s.status}`, "data-span-id": s.id, "data-depth": String(s.depth ?? 0),
      tabindex: "0", role: "button", style: `--depth: ${s.depth ?? 0}`,
      onclick: open, onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } } },
      el("div", { class: "span-label" },
        el("span", { class: "span-name" }, s.name || s.id),
        el("span", { class: "muted span-meta" }, `${s.type || ""} · ${fmtMs(s.duration_ms)}`)),
      el("div", { class: "span-track" },
        el("div", { class: `span-bar status-${s.status}${s.end_time ? "" : " open"}`,
          style: `left: ${left.toFixed(3)}%; width: ${width.toFixed(3)}%`, title: `${s.name}: ${fmtMs(s.duration_ms)}` })));
    return row;
  });

  root.append(el("div", { class: "stack trace-view" },
    el("h2", {}, trace.name || trace.id, " ", statusTag(trace.status)),
    el("div", { class: "row muted trace-summary" },
      el("span", {}, fmtTime(trace.start_time)), el("span", {}, fmtMs(trace.duration_ms)),
      el("span", {}, `${trace.num_spans ?? spans.length} span${(trace.num_spans ?? spans.length) === 1 ? "" : "s"}`), el("span", {}, `${trace.total_tokens ?? 0} tokens`),
      trace.model ? el("span", {}, trace.model) : null, tagChips(trace.tags)),
    el("div", { class: "grid" },
      el("div", { class: "panel stack span-tree", id: "span-tree" },
        rows.length ? rows : el("p", { class: "muted" }, "This trace has no spans.")),
      detail)));
  if (rows.length) rows[0].classList.add("first");
}

function pretty(value) {
  if (value === null || value === undefined) return null;
  return el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}
function messages(value) {
  const list = Array.isArray(value) ? value : Array.isArray(value?.messages) ? value.messages : null;
  if (!list) return pretty(value);
  return el("div", { class: "stack messages" }, ...list.map(m => el("div", { class: "message" },
    el("span", { class: "tag role" }, m.role || "?"),
    el("pre", {}, typeof m.content === "string" ? m.content : JSON.stringify(m.content ?? m, null, 2)))));
}
function section(title, body) { return body ? el("section", { class: "stack" }, el("h4", {}, title), body) : null; }
function kv(obj) {
  const entries = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined);
  if (!entries.length) return null;
  return el("dl", { class: "kv" }, ...entries.flatMap(([k, v]) => [el("dt", {}, k),
    el("dd", {}, typeof v === "number" ? String(Math.round(v * 100) / 100) : typeof v === "string" ? v : JSON.stringify(v))]));
}

function showSpan(detail, s) {
  const tags = tagChips(s.tags);
  const out = s.output && typeof s.output === "object" && !Array.isArray(s.output) && "role" in s.output
    ? messages([s.output]) : pretty(s.output);
  detail.replaceChildren(...[
    el("h3", {}, s.name || s.id, " ", statusTag(s.status)),
    kv({ id: s.id, type: s.type, model: s.model, user: s.user, "finish reason": s.finish_reason,
         "completion id": s.completion_id, started: fmtTime(s.start_time), duration: fmtMs(s.duration_ms) }),
    s.error ? section("Error", el("pre", { class: "error" }, typeof s.error === "string" ? s.error : JSON.stringify(s.error, null, 2))) : null,
    section("Input", messages(s.input)),
    section("Output", out),
    section("Usage", kv(s.usage)),
    section("Timings", kv(s.timings)),
    section("Tags", tags.length ? el("div", { class: "span-tags" }, tags) : null),
    section("Meta", s.meta && Object.keys(s.meta).length ? pretty(s.meta) : null)].filter(Boolean));
}
