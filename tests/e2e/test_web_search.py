"""web_search_options end to end: `rill serve --config rill.toml` with a [search] table pointing at the
fake search server on loopback, the real SmolLM2, the official `openai` client. The question is
searched, the model reads the results, and every annotation it gets points at one of them."""

from __future__ import annotations

from typing import Iterator

import openai
import pytest

from tests.e2e.support import MODEL, RillFactory, make_client
from tests.search_server import RESULTS, SearchServer, search_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def searcher() -> Iterator[SearchServer]:
    with search_server() as server:
        yield server


@pytest.fixture(scope="module")
def searching(rill_factory: RillFactory, searcher: SearchServer, tmp_path_factory: pytest.TempPathFactory) -> openai.OpenAI:
    config = tmp_path_factory.mktemp("search") / "rill.toml"
    config.write_text(f'[[models]]\npath = "embedded"\n\n[search]\nprovider = "searxng"\nurl = "{searcher.url}"\n')
    return make_client(rill_factory("--config", str(config), cached=False).url)


def test_a_searched_question_is_answered_with_the_results_in_context(searching: openai.OpenAI,
                                                                     searcher: SearchServer) -> None:
    question = "What does result 1 say?"
    r = searching.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0,
        web_search_options={"search_context_size": "low"})
    assert searcher.requests[-1].params["q"] == question
    message = r.choices[0].message
    assert message.content
    urls = {x["url"] for x in RESULTS}
    for a in message.annotations or []:  # a small model may or may not cite: what it cites is real
        assert a.type == "url_citation" and a.url_citation.url in urls
        assert 0 <= a.url_citation.start_index < a.url_citation.end_index <= len(message.content)
    plain = searching.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                              max_tokens=1)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 100  # three results were read


def test_a_search_request_streams_through_the_openai_client(searching: openai.OpenAI) -> None:
    chunks = list(searching.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about result 2 [2]."}], max_tokens=24,
        stream=True, web_search_options={}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
