"""The layering of DESIGN.md's Boundaries table, checked on the imports of every module in src/rill."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "rill"

# layer (module prefix) -> imports it must not make (a name forbids it and everything under it)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "rill.engine": ("rill.api", "fastapi", "starlette", "pydantic", "rill.store"),
    "rill.sampling": ("threading", "asyncio", "socket", "httpx", "rill.api", "rill.engine", "rill.backends",
                      "subprocess", "multiprocessing", "concurrent", "urllib", "http", "requests"),
    "rill.backends": ("rill.api", "rill.store"),
    "rill.api": ("rill.backends.local", "rill.engine.loop"),
    "rill.store": ("rill.engine", "rill.api"),
    # speech is synchronous text -> audio: no HTTP, no event loop, nothing of the model's
    "rill.speech": ("rill.api", "rill.engine", "rill.backends", "rill.store", "asyncio", "fastapi",
                    "starlette", "httpx"),
    # OpenTelemetry export is told what to record (by api/core/tracing.py and backends/upstream.py);
    # it reads nothing of theirs
    "rill.telemetry": ("rill.api", "rill.engine", "rill.backends", "rill.store", "rill.upstreams", "rill.hub"),
    # Hub downloads resolve a name to a path before anything is built
    "rill.hub": ("rill.api", "rill.engine", "rill.backends", "rill.store", "rill.telemetry", "rill.upstreams"),
    # the gateway's replicas: upstream clients and routing, no HTTP server and no engine
    "rill.upstreams": ("rill.api", "rill.engine", "rill.store", "fastapi", "starlette"),
    "rill": ("rill.cli",),  # nothing imports the composition root...
}
ENTRY_POINTS = {"rill.cli", "rill.__main__"}  # ...except `python -m rill`, and cli may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module an import statement in the file names, at any depth (function-level too);
    `from a import b` names both a and a.b, relative imports are resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_of(ast.parse(path.read_text(encoding="utf-8"), str(path)), package)


def imports_of(tree: ast.AST, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def violates(imported: str, forbidden: str) -> bool:
    return imported == forbidden or imported.startswith(forbidden + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_finds_the_package():
    names = {module_name(p) for p in MODULES}
    assert {"rill.cli", "rill.api.protocols.chat.route", "rill.engine.loop", "rill.sampling.sampler", "rill.backends.base"} <= names


def test_import_collector_sees_every_import_form():
    source = "import a.b\nfrom c import d\nfrom . import e\nfrom ..f import g\ndef h():\n    import threading\n"
    assert imports_of(ast.parse(source), "rill.x.y") >= {"a.b", "c", "c.d", "rill.x.y.e", "rill.x.f.g", "threading"}


def test_violation_check_matches_whole_module_names_only():
    assert violates("rill.api", "rill.api") and violates("rill.api.protocols.chat.schemas", "rill.api")
    assert not violates("rill.apis", "rill.api") and not violates("httpx_extra", "httpx")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_module_respects_the_layering(path):
    name = module_name(path)
    found = imports(path)
    broken = sorted(
        f"{name} imports {imp} ({layer}/ must not import {bad})"
        for layer, banned in FORBIDDEN.items()
        if violates(name, layer) and name not in ENTRY_POINTS
        for bad in banned
        for imp in found
        if violates(imp, bad)
    )
    assert not broken, "\n".join(broken)
