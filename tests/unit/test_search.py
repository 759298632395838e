"""The search package: providers against the fake search server on loopback (results, keys,
failures as SearchFailed), the context budget, and citations found in an answer."""

from __future__ import annotations

import socket

import pytest

from rill.config import SearchConfig
from rill.errors import SearchFailed
from rill.search.context import CONTEXT_BUDGETS, Source, citations, context_text, within_budget
from rill.search.providers import Location, SearchResult, open_provider
from tests.search_server import RESULTS, search_server

SOURCES = (Source(1, "One", "https://one.example/"), Source(2, "Two", "https://two.example/"))


def spans(content: str) -> list[tuple[str, str]]:
    return [(a["url_citation"]["title"], content[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]])
            for a in citations(content, SOURCES)]


def test_markers_and_urls_are_citations():
    assert spans("A [1][2]. B [2, 1]. C [9]. D [1, 9].") == [
        ("One", "[1]"), ("Two", "[2]"), ("Two", "2"), ("One", "1"), ("One", "[1, 9]")]
    assert spans("see https://two.example/ and https://two.example/ again") == [
        ("Two", "https://two.example/"), ("Two", "https://two.example/")]
    assert spans("nothing cited, not even [0] or [3]") == []


def test_the_budget_keeps_the_first_results_and_cuts_snippets():
    results = [SearchResult(f"t{n}", f"https://{n}.example/", "word " * 1000) for n in range(10)]
    for size, (count, chars) in CONTEXT_BUDGETS.items():
        kept = within_budget(results, size)
        assert [r.url for r in kept] == [r.url for r in results[:count]]
        assert sum(len(r.snippet) for r in kept) <= chars + 2 * count
    text = context_text("q", within_budget(results, "low"), "2026-12-02")
    assert "[1] t0" in text and "[3] t2" in text and "[4]" not in text and "2026-12-02" in text
    assert "found nothing" in context_text("q", [], "2026-12-02")


async def test_searxng_results_come_back_in_order():
    with search_server() as server:
        provider = open_provider(SearchConfig(provider="searxng", url=server.url))
        try:
            results = await provider.search("tea", Location(city="Kyoto"), 4)
        finally:
            await provider.aclose()
    assert [r.url for r in results] == [r["url"] for r in RESULTS[:4]]
    assert results[0].title == "Result 1" and results[0].snippet.startswith("Snippet number 1.")
    assert server.requests[0].params == {"q": "tea Kyoto", "format": "json"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path, says", [("/broken", "HTTP 500"), ("/notjson", "not JSON"),
                                        ("/nolist", "without a `results` list"), (None, "could not be reached")])
async def test_a_provider_failure_is_search_failed(path, says):
    with search_server() as server:
        url = server.url + path if path is not None else f"http://127.0.0.1:{closed_port()}"
        provider = open_provider(SearchConfig(provider="searxng", url=url, timeout=5))
        try:
            with pytest.raises(SearchFailed, match=says):
                await provider.search("tea", None, 3)
        finally:
            await provider.aclose()
