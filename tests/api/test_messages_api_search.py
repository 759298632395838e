"""The Messages API's `web_search_*` server tool on a server with a [search] provider (the fake
search server on loopback): Rill searches the last user message before generating, the results
go into the system prompt, allowed/blocked domains filter them, the span records the search."""

from __future__ import annotations

from typing import Iterator

import pytest

from rill.config import SearchConfig, ServerConfig
from tests.api.conftest import MODEL
from tests.search_server import RESULTS, SearchServer, search_server

URL = "/v1/messages"
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


@pytest.fixture
def searcher() -> Iterator[SearchServer]:
    with search_server() as server:
        yield server


@pytest.fixture
def config(tmp_path, searcher) -> ServerConfig:
    return ServerConfig(database_url=f"sqlite:///{tmp_path / 'rill.db'}",
                        search=SearchConfig(provider="searxng", url=searcher.url))


def ask(text: str, **fields) -> dict:
    return {"model": MODEL, "max_tokens": 300, "temperature": 0, "messages": [{"role": "user", "content": text}],
            **fields}


async def test_the_last_user_message_is_searched_and_read(client, searcher, app):
    plain = (await client.post(URL, json=ask("What is new?"))).json()
    r = await client.post(URL, json=ask("What is new?", tools=[SEARCH]))
    assert r.status_code == 200, r.text
    searched = r.json()
    assert searcher.requests[-1].params["q"] == "What is new?"
    assert searched["content"] == [{"type": "text", "text": "What is new?"}]  # the fake echoes the question
    prompt = searched["usage"]["input_tokens"] + searched["usage"]["cache_read_input_tokens"]
    before = plain["usage"]["input_tokens"] + plain["usage"]["cache_read_input_tokens"]
    assert prompt > before + 5 * len("Snippet number 1.")  # the results are in the prompt
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["meta"]["web_search"]["query"] == "What is new?"
    assert [x["url"] for x in span["meta"]["web_search"]["results"]] == [x["url"] for x in RESULTS[:5]]


async def test_domains_filter_the_results(client, app):
    allowed = {**SEARCH, "allowed_domains": ["site2.example", "site5.example"]}
    blocked = {**SEARCH, "blocked_domains": ["site1.example"]}
    for tool, urls in ((allowed, ["https://site2.example/page", "https://site5.example/page"]),
                       (blocked, [x["url"] for x in RESULTS[1:5]])):
        r = await client.post(URL, json=ask("news", tools=[tool], stream=True))
        assert r.status_code == 200, r.text
        await app.state.span_writer.flush()
        span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
        assert [x["url"] for x in span["meta"]["web_search"]["results"]] == urls


async def test_the_location_is_a_hint(client, searcher):
    tool = {**SEARCH, "user_location": {"type": "approximate", "city": "Lyon", "country": "FR"}}
    assert (await client.post(URL, json=ask("weather", tools=[tool]))).status_code == 200
    assert searcher.requests[-1].params["q"] == "weather Lyon FR"


async def test_client_tools_are_still_offered_beside_it(client):
    tools = [SEARCH, {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
    r = await client.post(URL, json=ask("what time is it", tools=tools, tool_choice={"type": "any"}))
    assert r.status_code == 200, r.text
    assert [b["name"] for b in r.json()["content"] if b["type"] == "tool_use"] == ["get_time"]
