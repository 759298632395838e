"""POST /v1/responses beyond the basics: stored responses belong to the API key that made them
(another key's are not found, an admin key's see all), a thinking model's reasoning items and
reasoning tokens, web search with the server's [search] provider (a web_search_call item, the
results in the prompt, citations as url_citation annotations) and without one."""

from __future__ import annotations

from typing import Iterator

import pytest

from rill.config import SearchConfig, ServerConfig
from tests.api.conftest import assert_error
from tests.api.test_reasoning import THINKS, THOUGHT
from tests.api.test_responses import URL, create, output_text, req, stream
from tests.search_server import RESULTS, SearchServer, search_server

OPERATOR_KEY = "operator-secret-0123456789"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("config", [{"api_keys": (OPERATOR_KEY,)}], indirect=True)
async def test_a_stored_response_belongs_to_its_key(client, app):
    keys = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        _, secret = await app.state.keys.create(name, admin=admin)
        keys[name] = bearer(secret)
    assert_error(await client.post(URL, json=req()), 401)
    mine = await create(client, req("mine"), headers=keys["alice"])
    rid = mine["id"]
    for path in (f"{URL}/{rid}", f"{URL}/{rid}/input_items"):
        assert (await client.get(path, headers=keys["alice"])).status_code == 200
        assert_error(await client.get(path, headers=keys["bob"]), 404)
        assert (await client.get(path, headers=keys["root"])).status_code == 200
    assert_error(await client.post(URL, json=req("more", previous_response_id=rid), headers=keys["bob"]), 404,
                 param="previous_response_id")
    continued = await create(client, req("more", previous_response_id=rid), headers=keys["alice"])
    assert continued["previous_response_id"] == rid
    assert_error(await client.delete(f"{URL}/{rid}", headers=keys["bob"]), 404)
    assert (await client.delete(f"{URL}/{rid}", headers=keys["root"])).json()["deleted"] is True


@pytest.mark.parametrize("backend", [{"chat_template": THINKS}], indirect=True)
async def test_a_thinking_model_s_reasoning_is_an_item_of_its_own(client):
    events = await stream(client, req(THOUGHT + "Blue.", reasoning={"effort": "high", "summary": "auto"}))
    final = events[-1]["response"]
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    text = reasoning["content"][0]["text"]
    assert text == "\nThe user wants a colour. Blue is safe.\n"
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == text
    assert output_text(final) == "Blue."
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == len(THOUGHT.rstrip("\n"))
    assert final["reasoning"] == {"effort": "high", "summary": "auto"}
    # sent back, the reasoning goes with its answer and the conversation goes on
    again = await create(client, req([{"role": "user", "content": "colour?"}, reasoning, message,
                                      {"role": "user", "content": "Why?"}]))
    assert output_text(again) == "Why?"


@pytest.fixture
def searcher() -> Iterator[SearchServer]:
    with search_server() as server:
        yield server


ANSWER = "Paris is the capital [1]. It is large [2]."


@pytest.fixture
def config(request, tmp_path, searcher) -> ServerConfig:
    """This module's servers have a [search] provider (the fake search server)."""
    return ServerConfig(database_url=f"sqlite:///{tmp_path / 'rill.db'}",
                        search=SearchConfig(provider="searxng", url=searcher.url),
                        **(getattr(request, "param", None) or {}))


async def test_web_search_searches_first_and_cites(client, searcher):
    events = await stream(client, req(ANSWER, tools=[{"type": "web_search", "search_context_size": "low"}]))
    kinds = [e["type"] for e in events]
    assert kinds[2:7] == ["response.output_item.added", "response.web_search_call.in_progress",
                          "response.web_search_call.searching", "response.web_search_call.completed",
                          "response.output_item.done"]
    final = events[-1]["response"]
    search, message = final["output"]
    assert search["type"] == "web_search_call" and search["status"] == "completed"
    assert search["action"]["query"] == ANSWER
    assert searcher.requests[-1].params["q"] == ANSWER
    annotations = message["content"][0]["annotations"]
    urls = {r["url"]: r["title"] for r in RESULTS}
    assert annotations and all(a["type"] == "url_citation" and urls[a["url"]] == a["title"] for a in annotations)
    assert any(e["type"] == "response.output_text.annotation.added" for e in events)
    plain = await create(client, req(ANSWER))
    assert final["usage"]["input_tokens"] > plain["usage"]["input_tokens"] + 20  # the results are in the prompt


async def test_web_search_left_out_where_asked(client, searcher):
    before = len(searcher.requests)
    cached_only = await create(client, req(tools=[{"type": "web_search", "external_web_access": False}]))
    none_allowed = await create(client, req(tools=[{"type": "web_search"}], tool_choice="none"))
    no_calls = await create(client, req(tools=[{"type": "web_search"}], max_tool_calls=0))
    assert len(searcher.requests) == before
    assert [i["type"] for r in (cached_only, none_allowed, no_calls) for i in r["output"]] == ["message"] * 3
