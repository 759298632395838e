"""web_search_options on the fake model (which echoes the last user message) against a fake search
server on loopback: the last user message is searched with the location hints, the results land
in the system prompt within search_context_size's budget, and the answer's citations come back
as url_citation annotations pointing at the server's URLs, inside the content."""

from __future__ import annotations

from typing import Iterator

import pytest

from rill.config import SearchConfig, ServerConfig
from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat, chunks_of, parse_sse, stream_text
from tests.search_server import KEY, RESULTS, SearchServer, search_server

ANSWER = "Paris is the capital [1]. It is large [2, 3]. More at https://site4.example/page today."


@pytest.fixture
def searcher() -> Iterator[SearchServer]:
    with search_server() as server:
        yield server


@pytest.fixture
def config(request, tmp_path, searcher, monkeypatch) -> ServerConfig:
    """A server whose [search] is the fake (searxng unless parametrized with provider and path)."""
    provider, path = getattr(request, "param", ("searxng", ""))
    monkeypatch.setenv("RILL_TEST_SEARCH_KEY", KEY)
    search = SearchConfig(provider=provider, url=searcher.url + path,
                          api_key_env=None if provider == "searxng" else "RILL_TEST_SEARCH_KEY")
    return ServerConfig(database_url=f"sqlite:///{tmp_path / 'rill.db'}", search=search)


def check_citations(content: str, annotations: list[dict]) -> None:
    urls = {r["url"]: r["title"] for r in RESULTS}
    assert annotations, "no citations"
    for a in annotations:
        assert a["type"] == "url_citation"
        cite = a["url_citation"]
        assert cite["url"] in urls and cite["title"] == urls[cite["url"]]
        assert 0 <= cite["start_index"] < cite["end_index"] <= len(content)


async def test_an_answer_cites_the_results_it_uses(client, searcher):
    body = (await client.post(CHAT_URL, json=chat(ANSWER, temperature=0, web_search_options={}))).json()
    message = body["choices"][0]["message"]
    content, annotations = message["content"], message["annotations"]
    assert content == ANSWER
    check_citations(content, annotations)
    spans = [(a["url_citation"]["url"], content[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]])
             for a in annotations]
    assert spans == [("https://site1.example/page", "[1]"), ("https://site2.example/page", "2"),
                     ("https://site3.example/page", "3"), ("https://site4.example/page", "https://site4.example/page")]
    [seen] = searcher.requests
    assert seen.params["q"] == ANSWER  # the last user message


async def test_the_results_are_in_the_prompt(client):
    plain = (await client.post(CHAT_URL, json=chat("What is new?", temperature=0))).json()
    searched = (await client.post(CHAT_URL, json=chat("What is new?", temperature=0, web_search_options={}))).json()
    # the fake's tokens are bytes: the prompt grew by the results' text
    assert searched["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 5 * len("Snippet number 1.")


async def test_context_size_bounds_how_much_is_read(client):
    sizes = {}
    for size in ("low", "medium", "high"):
        r = await client.post(CHAT_URL, json=chat("What is new?", web_search_options={"search_context_size": size}))
        sizes[size] = r.json()["usage"]["prompt_tokens"]
    assert sizes["low"] < sizes["medium"] < sizes["high"]


async def test_a_streamed_answer_sends_its_annotations_before_the_finish(client):
    r = await client.post(CHAT_URL, json=chat(ANSWER, temperature=0, stream=True, web_search_options={}))
    events = chunks_of(parse_sse(r.text))
    content = stream_text(events)
    deltas = [c["choices"][0]["delta"] for c in events if c.get("choices")]
    [cited] = [d["annotations"] for d in deltas if "annotations" in d]
    check_citations(content, cited)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_cited_answer_goes_back_with_its_annotations(client):
    body = (await client.post(CHAT_URL, json=chat(ANSWER, temperature=0, web_search_options={}))).json()
    message = body["choices"][0]["message"]
    assert message["annotations"]
    again = {"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": ANSWER}, message, {"role": "user", "content": "Thanks."}]}
    r = await client.post(CHAT_URL, json=again)
    assert r.status_code == 200, r.text


async def test_the_location_is_a_hint_to_the_search(client, searcher):
    location = {"type": "approximate", "approximate": {"city": "Lyon", "country": "FR"}}
    await client.post(CHAT_URL, json=chat("weather", web_search_options={"user_location": location}))
    assert searcher.requests[-1].params["q"] == "weather Lyon FR"


async def test_an_answer_without_citations_has_no_annotations(client):
    body = (await client.post(CHAT_URL, json=chat("No sources here.", web_search_options={}))).json()
    assert body["choices"][0]["message"]["annotations"] == []


async def test_the_span_records_the_search(client):
    r = await client.post(CHAT_URL, json=chat(ANSWER, web_search_options={}))
    span_id = r.headers["x-rill-span-id"]
    span = (await client.get(f"/v1/spans/{span_id}")).json()
    searched = span["meta"]["web_search"]
    assert searched["provider"] == "searxng" and searched["query"] == ANSWER
    assert [x["url"] for x in searched["results"]] == [x["url"] for x in RESULTS[:5]]


@pytest.mark.parametrize("config", [("brave", "/brave/res/v1/web/search"), ("tavily", "/tavily/search")],
                         indirect=True)
async def test_brave_and_tavily_shaped_providers(client, searcher, config):
    body = (await client.post(CHAT_URL, json=chat(ANSWER, temperature=0, web_search_options={
        "user_location": {"type": "approximate", "approximate": {"city": "Oslo", "country": "NO"}}}))).json()
    check_citations(body["choices"][0]["message"]["content"], body["choices"][0]["message"]["annotations"])
    seen = searcher.requests[-1]
    if config.search.provider == "brave":
        assert seen.params["q"] == ANSWER and seen.headers["x-loc-city"] == "Oslo" and seen.params["country"] == "no"
    else:
        assert seen.body["query"] == f"{ANSWER} Oslo"


@pytest.mark.parametrize("config", [("searxng", "/broken")], indirect=True)
async def test_a_failing_provider_is_a_502_before_the_first_byte(client):
    r = await client.post(CHAT_URL, json=chat("hi", stream=True, web_search_options={}))
    err = assert_error(r, 502, type="server_error", code="search_failed")
    assert "HTTP 500" in err["message"]


async def test_a_conversation_without_user_text_is_a_400(client):
    r = await client.post(CHAT_URL, json={"model": MODEL, "web_search_options": {},
                                          "messages": [{"role": "system", "content": "You help."}]})
    assert_error(r, 400, param="messages")
