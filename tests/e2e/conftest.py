"""End-to-end fixtures: real `rill serve` processes on the embedded SmolLM2 model.

One server (default flags) is shared by the whole session; `rill_factory` starts extra servers with
other flags (a small `--ctx`, ...), stopped when their test module ends. Every server's output
goes to a log file; when an e2e test fails, the tail of each running server's log is attached to
the failure report.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Iterator

import openai
import pytest

from tests.e2e.support import (BACKEND_FLAGS, CLIENT_TIMEOUT_S, STOP_TIMEOUT_S, RillFactory, RillServer, live_servers,
                               make_client, start_server)


@pytest.fixture(scope="session")
def rill_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rill-logs")


@pytest.fixture(scope="session")
def rill_factory(rill_logs: Path) -> Iterator[RillFactory]:
    factory = RillFactory(rill_logs)
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def servers_stop_with_their_module(rill_factory: RillFactory) -> Iterator[None]:
    yield
    problems = rill_factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked `both_backends` run on each engine of BACKEND_FLAGS (one shared server
    apiece), the rest on the default."""
    if "engine_backend" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_backends") is not None
        metafunc.parametrize("engine_backend", list(BACKEND_FLAGS) if both else ["default"],
                             scope="session", indirect=True)


@pytest.fixture(scope="session", autouse=True)
def torch_kernels_built() -> None:
    """Rill's CPU kernels compiled before any torch server starts (about 30 s on a machine that
    has not built them yet, then cached): a server's start then stays within its ready timeout."""
    from rill.backends.torch import kernels

    kernels._build()


@pytest.fixture(scope="session")
def engine_backend(request: pytest.FixtureRequest) -> str:
    """Which backend the shared server runs (see BACKEND_FLAGS)."""
    return request.param


@pytest.fixture(scope="session")
def rill_server(rill_logs: Path, engine_backend: str) -> Iterator[RillServer]:
    """The shared server: `rill serve` with default flags, or for the `both_backends` modules
    also with `--backend llamacpp`."""
    server = start_server(rill_logs, *BACKEND_FLAGS[engine_backend])
    yield server
    rc, killed = server.stop()
    if killed:
        pytest.fail(f"`rill serve` ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s and was killed; "
                    f"its output:\n{server.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def root(rill_server: RillServer) -> str:
    """The shared server's base URL, e.g. http://127.0.0.1:PORT (no /v1)."""
    return rill_server.url


@pytest.fixture(scope="session")
def client(root: str) -> Iterator[openai.OpenAI]:
    c = make_client(root)
    yield c
    c.close()


@pytest.fixture
async def async_client(root: str) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    await c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("e2e") is not None:
        for server in live_servers():
            flags = " ".join(server.flags) or "(default flags)"
            report.sections.append((f"rill serve {flags} at {server.url}: output tail", server.log_tail()))
