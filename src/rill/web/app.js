// The page's router: #/playground, #/traces, #/traces/<trace id>, #/stored, #/upstreams. Each view module
// exports render(root, ...params).
import { getKey, setKey } from "/ui/api.js";

const VIEWS = { playground: "/ui/playground.js", traces: "/ui/traces.js", stored: "/ui/stored.js",
                upstreams: "/ui/upstreams.js" };

let navigation = 0;  // a view still loading when the hash changes again must not draw

async function route() {
  const current = ++navigation;
  const [name = "playground", ...params] = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const view = VIEWS[name] ? name : "playground";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
  const module = await import(VIEWS[view]);
  if (current !== navigation) return;
  // each view draws into a fresh element, swapped in only if no newer navigation started
  const root = document.createElement("div");
  document.getElementById("view").replaceChildren(root);
  await module.render(root, ...params.map(decodeURIComponent));
  if (current !== navigation) root.remove();
}

function keyDialog() {
  const dialog = document.getElementById("api-key-dialog");
  const input = document.getElementById("api-key-input");
  document.getElementById("api-key-button").addEventListener("click", () => {
    input.value = getKey(); dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") { setKey(input.value.trim()); route(); }
  });
}

window.addEventListener("hashchange", route);
keyDialog();
route();
