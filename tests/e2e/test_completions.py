"""Legacy completions on a real `rill serve` (the embedded SmolLM2) through the official `openai`
client's `completions.create`: a raw prompt (no chat template) streamed and not, echo, the legacy
logprobs, best_of, a token-id prompt, a batch of prompts with n, stop strings, the errors the SDK
raises (suffix on a model without fill-in-the-middle tokens, a prompt over the context), a prompt
scored (echo with logprobs, max_tokens 0), and the request's span."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
COUNTING = "1, 2, 3, 4,"
GREEDY = {"model": MODEL, "temperature": 0, "max_tokens": 12}


def tokens_of(root: str, text: str) -> list[int]:
    r = httpx.post(root + "/tokenize", json={"content": text}, timeout=CLIENT_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["tokens"]]


@pytest.fixture(scope="module")
def answer(client: openai.OpenAI) -> openai.types.Completion:
    """The greedy completion of PROMPT, that other tests compare with."""
    return client.completions.create(prompt=PROMPT, **GREEDY)


def test_a_raw_prompt_is_completed(answer, root):
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-") and answer.model == MODEL
    choice = answer.choices[0]
    assert choice.index == 0 and choice.text.strip() and choice.logprobs is None
    assert choice.finish_reason in ("length", "stop")
    # the prompt's own tokens, no template around them (SmolLM2 adds no BOS to raw text)
    assert answer.usage.prompt_tokens == len(tokens_of(root, PROMPT))
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.usage.completion_tokens <= 12


def test_max_tokens_defaults_to_16(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"


def test_a_stream_is_the_same_text(client, answer):
    stream = client.completions.create(prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert "".join(ch.text for c in chunks for ch in c.choices) == answer.choices[0].text
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == [answer.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_echo_prepends_the_prompt(client, answer):
    r = client.completions.create(prompt=PROMPT, echo=True, **GREEDY)
    assert r.choices[0].text == PROMPT + answer.choices[0].text
    streamed = client.completions.create(prompt=PROMPT, echo=True, stream=True, **GREEDY)
    assert "".join(ch.text for c in streamed for ch in c.choices) == PROMPT + answer.choices[0].text


def test_logprobs_in_the_legacy_shape(client, answer):
    r = client.completions.create(prompt=PROMPT, logprobs=3, **GREEDY)
    choice = r.choices[0]
    lp = choice.logprobs
    assert choice.text == answer.choices[0].text
    n = len(lp.tokens)
    assert n > 0 and len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert "".join(lp.tokens) == choice.text  # English text: no token splits a character
    for token, logprob, top, offset in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset):
        assert choice.text[offset:].startswith(token)
        assert len(top) <= 4 and top[token] == logprob <= 0
        assert max(top, key=top.get) == token  # greedy: the sampled token is the likeliest
    streamed = client.completions.create(prompt=PROMPT, logprobs=3, stream=True, **GREEDY)
    pieces = [ch.logprobs for c in streamed for ch in c.choices if ch.logprobs]
    assert sum((p.tokens for p in pieces), []) == lp.tokens
    assert sum((p.text_offset for p in pieces), []) == lp.text_offset


def test_best_of_returns_the_best_choices_first(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, temperature=1.0, seed=5, max_tokens=10, n=2,
                                  best_of=4, logprobs=0)
    assert [c.index for c in r.choices] == [0, 1]
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in r.choices]
    assert means[0] >= means[1]
    # four choices were generated and counted; two came back
    assert r.usage.completion_tokens > sum(len(c.logprobs.tokens) for c in r.choices)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=PROMPT, best_of=2, stream=True)
    assert caught.value.body["param"] == "best_of"


def test_a_token_id_prompt_is_the_same_prompt(client, root, answer):
    r = client.completions.create(prompt=tokens_of(root, PROMPT), **GREEDY)
    assert r.choices[0].text == answer.choices[0].text and r.usage.prompt_tokens == answer.usage.prompt_tokens


def test_a_batch_of_prompts_is_numbered_prompt_major(client, answer):
    counting = client.completions.create(prompt=COUNTING, **GREEDY).choices[0].text
    r = client.completions.create(prompt=[PROMPT, COUNTING], n=2, **GREEDY)
    assert [(c.index, c.text) for c in r.choices] == [
        (0, answer.choices[0].text), (1, answer.choices[0].text), (2, counting), (3, counting)]
    streamed = client.completions.create(prompt=[PROMPT, COUNTING], n=2, stream=True, **GREEDY)
    texts: dict[int, str] = {}
    for chunk in streamed:
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
    assert texts == {c.index: c.text for c in r.choices}


def test_stop_strings(client):
    r = client.completions.create(prompt=COUNTING, stop=[" 7"], **GREEDY)
    assert r.choices[0].text == " 5, 6," and r.choices[0].finish_reason == "stop"


def test_suffix_on_a_model_without_fim_tokens_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))")
    assert caught.value.body["param"] == "suffix" and "fill-in-the-middle" in caught.value.body["message"]


def test_echo_with_logprobs_scores_the_prompt_as_generating_it_did(client, root):
    """lm-eval's loglikelihood request (echo, logprobs, max_tokens 0) on the real model: a prompt
    followed by the model's own greedy answer gets, for the answer's tokens, the logprobs they had
    when generated (llama.cpp without llamafile computes a token's logits the same in a prefill
    batch as in a decode step), each the likeliest of its top; the first token's is null."""
    ids = tokens_of(root, PROMPT)
    said = client.completions.create(prompt=ids, logprobs=1, **GREEDY).choices[0]
    answer_ids = tokens_of(root, PROMPT + said.text)[len(ids):]
    scored = client.completions.create(model=MODEL, prompt=ids + answer_ids, echo=True, logprobs=1, max_tokens=0)
    choice = scored.choices[0]
    assert choice.text == PROMPT + said.text and choice.finish_reason == "length"
    lp = choice.logprobs
    assert len(lp.tokens) == len(ids) + len(answer_ids) and lp.token_logprobs[0] is None
    assert scored.usage.completion_tokens == 0
    assert lp.tokens[len(ids):] == said.logprobs.tokens  # the answer's text tokenizes back to its tokens
    assert lp.token_logprobs[len(ids):] == pytest.approx(said.logprobs.token_logprobs, abs=2e-3)
    for token, logprob, top in zip(lp.tokens[len(ids):], lp.token_logprobs[len(ids):], lp.top_logprobs[len(ids):]):
        assert max(top.values()) == pytest.approx(logprob, abs=2e-3)  # greedy: each was the likeliest


def test_a_prompt_over_the_context_is_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hello " * 20_000)
    assert caught.value.code == "context_length_exceeded" and caught.value.body["param"] == "prompt"


def test_the_request_is_a_span(client, root):
    raw = client.completions.with_raw_response.create(prompt=PROMPT, user="e2e-legacy", **GREEDY)
    span_id = raw.headers["x-rill-span-id"]
    r = raw.parse()
    # recorded before the answer was sent; found even while it waits in the writer's queue
    span = httpx.get(f"{root}/v1/spans/{span_id}", timeout=CLIENT_TIMEOUT_S).json()
    assert span["type"] == "completions" and span["user"] == "e2e-legacy" and span["input"] == PROMPT
    assert span["output"] == {"role": "assistant", "content": r.choices[0].text}
    assert span["usage"]["prompt_tokens"] == r.usage.prompt_tokens
