"""The gateway end to end against an upstream that fails on request (tests/upstream_faults.py):
a real `rill serve --config rill.toml` and the official openai client. A failure before the first
byte is an error status after the configured retries, or a fallback's answer; after it, the
stream ends with one error event (the openai client raises it); nothing waits beyond the
upstream's timeout; afterwards no request is in flight to any upstream (/metrics) and no
connection is left stalled, and the next request is served."""

from __future__ import annotations

import re
import time
from typing import Iterator

import httpx
import openai
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, RillFactory
from tests.upstream_faults import TEXT, FaultyUpstream, closed_port

pytestmark = pytest.mark.e2e

ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(rill_factory: RillFactory, upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Upstream models only: `<mode>` fails so (timeout 1 s, one retry), `<mode>+fb` falls back to `ok`."""
    lines = [f'[[models]]\nname = "ok"\nbase_url = "{upstream.base_url}"\nmodel = "ok"\n']
    for mode in ("refused", "http-500", "stall-head", "reset-head", "stall-body", "reset-body", "malformed"):
        url = f"http://127.0.0.1:{closed_port()}/v1" if mode == "refused" else upstream.base_url
        for name, fallbacks in ((mode, "[]"), (f"{mode}+fb", '["ok"]')):
            lines.append(f'[[models]]\nname = "{name}"\nbase_url = "{url}"\nmodel = "{mode}"\ntimeout = 1\n'
                         f"retries = 1\nfallbacks = {fallbacks}\n")
    config = tmp_path_factory.mktemp("gateway-faults") / "rill.toml"
    config.write_text("\n".join(lines))
    return rill_factory("--config", str(config), cached=False).url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()


def streamed_text(client: openai.OpenAI, model: str) -> tuple[str, set[str]]:
    chunks = list(client.chat.completions.create(model=model, messages=ASK, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), {c.model for c in chunks}


def assert_let_go(gateway: str, upstream: FaultyUpstream, client: openai.OpenAI) -> None:
    """Nothing in flight to any upstream, no stalled connection, and the next request served."""
    deadline = time.monotonic() + 10
    while True:
        metrics = httpx.get(gateway + "/metrics", timeout=CLIENT_TIMEOUT_S).text
        in_flight = [float(v) for v in re.findall(r'^rill_upstream_in_flight\{[^}]*\} (\S+)$', metrics, re.M)]
        if (in_flight and not any(in_flight) and upstream.stalled == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert in_flight and not any(in_flight), in_flight
    assert upstream.stalled == 0
    assert streamed_text(client, "ok") == (TEXT, {"ok"})


@pytest.mark.parametrize("model, error, status", [
    ("refused", openai.InternalServerError, 502),
    ("http-500", openai.InternalServerError, 502),
    ("stall-head", openai.APIStatusError, 504),
    ("reset-head", openai.InternalServerError, 502),
])
def test_before_the_first_byte_an_error_status_or_the_fallback(client: openai.OpenAI, gateway: str,
                                                                 upstream: FaultyUpstream, model: str,
                                                                 error: type, status: int) -> None:
    before = upstream.requests[model]
    with pytest.raises(error) as e:
        client.chat.completions.create(model=model, messages=ASK, stream=True)
    assert e.value.status_code == status and e.value.body["type"] == "server_error"
    if model != "refused":
        assert upstream.requests[model] - before == 2  # the try and its one retry
    assert streamed_text(client, f"{model}+fb") == (TEXT, {"ok"})
    assert_let_go(gateway, upstream, client)


@pytest.mark.parametrize("model", ["stall-body", "reset-body", "malformed"])
def test_after_the_first_byte_one_error_event_and_no_fallback(client: openai.OpenAI, gateway: str,
                                                                upstream: FaultyUpstream, model) -> None:
    ok_before = upstream.requests["ok"]
    seen = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(model=f"{model}+fb", messages=ASK, stream=True):
            seen.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert seen == ["Hello"]  # the first event went out; then the error ended the stream
    assert f"upstream {model}+fb" in e.value.message
    assert upstream.requests["ok"] == ok_before  # too late for the fallback
    assert_let_go(gateway, upstream, client)
