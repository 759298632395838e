"""Prefix reuse on the real model: cached tokens are reported, and greedy answers are the same
whether the prompt was prefilled from scratch, partly from the cache, or almost wholly from it."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.support import BACKEND_FLAGS, MODEL, RillFactory, RillServer

pytestmark = pytest.mark.e2e


@pytest.fixture(params=list(BACKEND_FLAGS))
def serve(request: pytest.FixtureRequest, rill_factory: RillFactory):
    """rill_factory on each engine: the default and llama.cpp keep their prompt caches apart
    (llama.cpp by slot, the torch backend by block hash)."""

    def start(*flags: str, **options) -> RillServer:
        return rill_factory(*BACKEND_FLAGS[request.param], *flags, **options)

    return start


SYSTEM = ("You are Rill's test assistant. You answer questions about geography, history and "
          "science in plain words, one or two sentences at most, and you never invent facts. ") * 4


def ask(root: str, messages: list[dict]) -> tuple[str, dict]:
    r = httpx.post(root + "/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 40})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["choices"][0]["message"]["content"], body["usage"]


def chat(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_greedy_answers_are_the_same_cold_partly_cached_and_cached(serve) -> None:
    root = serve("--parallel", "1", cached=False).url  # one slot: one cached prompt
    cold, cold_usage = ask(root, chat("What is the capital of France?"))
    assert cold_usage["prompt_tokens_details"]["cached_tokens"] == 0
    # another question takes the only slot and reuses the system prompt ...
    _, other_usage = ask(root, chat("Why is the sky blue?"))
    shared = other_usage["prompt_tokens_details"]["cached_tokens"]
    assert 100 < shared < other_usage["prompt_tokens"]
    # ... so the first question now finds only the system prompt cached
    partly, partly_usage = ask(root, chat("What is the capital of France?"))
    assert partly_usage["prompt_tokens_details"]["cached_tokens"] == shared
    # and asked once more, all of it but the last token
    cached, cached_usage = ask(root, chat("What is the capital of France?"))
    assert cached_usage["prompt_tokens_details"]["cached_tokens"] == cached_usage["prompt_tokens"] - 2
    assert partly == cold and cached == cold


def test_the_next_turn_of_a_chat_reuses_the_previous_prompt_and_answer(serve) -> None:
    """The previous answer's cells, written by decode steps, are reused too: llama.cpp built
    without llamafile's kernels (as `make` builds it) computes them bit for bit as a prefill
    would. (With those kernels they differed in the last bits, and reusing them changed this very
    answer; Rill then keeps prompt cells only.)"""
    root = serve("--parallel", "2", cached=False).url
    turn1 = chat("Name a large river in Europe.")
    answer1, usage1 = ask(root, turn1)
    turn2 = [*turn1, {"role": "assistant", "content": answer1}, {"role": "user", "content": "Which sea does it flow into?"}]
    answer2, usage2 = ask(root, turn2)
    cached = usage2["prompt_tokens_details"]["cached_tokens"]
    assert cached > usage1["prompt_tokens"] + usage1["completion_tokens"] // 2, (cached, usage1)
    fresh = serve("--parallel", "1", cached=False).url
    assert ask(fresh, turn2)[0] == answer2  # the same answer from a server with nothing cached


def test_with_free_slots_each_recent_prompt_stays_cached(serve) -> None:
    root = serve("--parallel", "4", cached=False).url
    questions = ["What is the capital of France?", "Why is the sky blue?", "Who wrote Hamlet?"]
    first = [ask(root, chat(q)) for q in questions]
    for q, (answer, _) in zip(questions, first):
        again, usage = ask(root, chat(q))
        assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 2
        assert again == answer


def test_cached_prompts_arriving_together_all_reuse_their_prefix(serve) -> None:
    """16 distinct ~800-token prompts, each served once (each cache kept in an idle slot), then
    all at once: every one maps its cached prefix (before, admitting one overwrote the cache of
    another still waiting: 5 of 16 were prefilled from scratch)."""
    import concurrent.futures

    root = serve("--parallel", "16", "--ctx", "2048", cached=False).url
    topics = ["rivers", "mountains", "deserts", "oceans", "forests", "volcanoes", "glaciers", "islands",
              "lakes", "canyons", "caves", "plains", "reefs", "deltas", "valleys", "tundra"]
    prompts = [chat(f"{i}. Tell me about {topic}. " + f"Facts about {topic}, please, in detail. " * 90)
               for i, topic in enumerate(topics)]

    def once(messages: list[dict]) -> dict:
        r = httpx.post(root + "/v1/chat/completions", timeout=300, json={
            "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 2})
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    for messages in prompts:
        once(messages)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        usages = list(pool.map(once, prompts))
    assert min(u["prompt_tokens"] for u in usages) > 700
    reused = [u["prompt_tokens_details"]["cached_tokens"] >= u["prompt_tokens"] - 2 for u in usages]
    assert all(reused), [(u["prompt_tokens_details"]["cached_tokens"], u["prompt_tokens"]) for u in usages]
