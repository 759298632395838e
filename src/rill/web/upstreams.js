// Upstream models' replicas (GET /v1/upstreams, an admin key): each replica's state, load,
// requests, errors and prefix-cache hits, refreshed every few seconds while the page shows.
import { api, ApiError, el } from "/ui/api.js";

const REFRESH_MS = 3000;

function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.message : String(e?.message || e));
}
function percent(x) { return x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`; }
function since(seconds) { return seconds ? new Date(seconds * 1000).toLocaleTimeString() : ""; }
function routed(counts) {
  return Object.entries(counts || {}).map(([why, n]) => el("span", { class: "tag" }, `${why} ${n}`));
}

function table(model) {
  const rows = model.replicas.map(r => el("tr", { "data-replica": r.url, "data-state": r.state },
    el("td", { "data-label": "Replica" }, el("code", {}, r.url)),
    el("td", { "data-label": "State" }, el("span", { class: `tag state-${r.state}` }, r.state.replace("_", "-")),
      r.ejected_since ? el("span", { class: "muted" }, ` since ${since(r.ejected_since)}`) : null),
    el("td", { "data-label": "In flight" }, String(r.in_flight)),
    el("td", { "data-label": "Requests" }, String(r.requests)),
    el("td", { "data-label": "Errors" }, String(r.errors)),
    el("td", { "data-label": "Prefix hits" }, percent(r.prefix_hit_rate)),
    el("td", { "data-label": "Routed by" }, routed(r.routed))));
  return el("section", { class: "panel stack", "data-model": model.model },
    el("h3", {}, model.model, el("span", { class: "muted" }, `  ${model.routing} · ${model.in_flight} in flight`)),
    el("div", { class: "table-wrap" }, el("table", { class: "table upstreams" },
      el("thead", {}, el("tr", {}, ...["Replica", "State", "In flight", "Requests", "Errors", "Prefix hits",
        "Routed by"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows))));
}

export async function render(root) {
  const body = el("div", { class: "stack", id: "upstreams" }, el("p", { class: "muted" }, "Loading…"));
  root.append(el("div", { class: "stack" }, el("h2", {}, "Upstreams"), body));
  async function load() {
    let page;
    try { page = await api("/v1/upstreams"); } catch (e) { body.replaceChildren(errorBox(e)); return; }
    body.replaceChildren(...(page.data.length ? page.data.map(table)
      : [el("p", { class: "muted empty" }, "No upstream models: this server serves local models only.")]));
  }
  await load();
  const timer = setInterval(() => { if (root.isConnected) load(); else clearInterval(timer); }, REFRESH_MS);
}
