"""POST /v1/completions (legacy completions) in-process on the fake model: raw prompts in every
shape (the fake echoes the last ChatML user turn of whatever it reads, so a raw prompt written in
ChatML answers exactly), streamed and not, echo, logprobs, best_of, suffix, batches of prompts
numbered prompt-major, the errors, the span, metrics, keys and cancellation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from rill.api.app import create_app
from rill.api.protocols.completions.logprobs import mean_logprob
from rill.backends.fake import IM_END, IM_START, FakeBackend
from rill.config import ModelConfig, ServerConfig, UpstreamConfig
from rill.engine.types import TokenLogprob
from tests.api.conftest import (DONE, MODEL, GatedBackend, assert_error, engine_idle, engine_of, fake_loader,
                                parse_sse, wait_until)
from tests.api.mock_pool import MockPool
from tests.api.test_metrics import sample, scrape
from tests.unit.completions_support import FIM, FimBackend

URL = "/v1/completions"
SLOTS = pytest.mark.parametrize("engine_slots", [4], indirect=True)
# 0.05 s a step: a 200-token answer would run 10 s, past wait_until's deadline, unless aborted
SLOW = pytest.mark.parametrize("backend", [{"step_delay": 0.05}], indirect=True)


def turn(text: str) -> str:
    """A raw ChatML prompt the fake model answers with `text`."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def turn_tokens(text: str) -> list[int]:
    return [IM_START, *b"user\n", *text.encode(), IM_END, *b"\n", IM_START, *b"assistant\n"]


def completion(prompt: Any = None, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": turn("hello") if prompt is None else prompt, "temperature": 0, **fields}


def chunks(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == DONE
    return events[:-1]


def texts(chunk_list: list[dict[str, Any]]) -> dict[int, str]:
    out: dict[int, str] = {}
    for c in chunk_list:
        for choice in c["choices"]:
            out[choice["index"]] = out.get(choice["index"], "") + choice["text"]
    return out


# ---- the basic answer ------------------------------------------------------------------------


async def test_a_raw_prompt_is_completed_without_a_template(client):
    r = await client.post(URL, json=completion())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == MODEL
    assert body["system_fingerprint"] == "fp_fake" and isinstance(body["created"], int)
    assert body["choices"] == [{"text": "hello", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    # the prompt's tokens exactly: no template around it, no BOS (the fake adds none)
    assert body["usage"] == {"prompt_tokens": len(turn_tokens("hello")), "completion_tokens": 5,
                             "total_tokens": len(turn_tokens("hello")) + 5, "prompt_tokens_details": {"cached_tokens": 0}}


async def test_max_tokens_defaults_to_16(client):
    r = await client.post(URL, json=completion(turn("x" * 40)))
    choice = r.json()["choices"][0]
    assert choice["text"] == "x" * 16 and choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 16
    r = await client.post(URL, json=completion(turn("x" * 40), max_tokens=30))
    assert r.json()["choices"][0]["text"] == "x" * 30


async def test_token_ids_are_the_same_prompt_as_their_text(client):
    by_text = (await client.post(URL, json=completion(turn("same")))).json()
    by_ids = (await client.post(URL, json=completion(turn_tokens("same")))).json()
    assert by_ids["choices"] == by_text["choices"]
    assert by_ids["usage"]["prompt_tokens"] == by_text["usage"]["prompt_tokens"] == len(turn_tokens("same"))
    # the same tokens: the second prompt is read from the first one's cache
    assert 0 < by_ids["usage"]["prompt_tokens_details"]["cached_tokens"] < len(turn_tokens("same"))


async def test_stop_strings_cut_the_text(client):
    r = await client.post(URL, json=completion(turn("one. two"), stop=[". "]))
    assert r.json()["choices"][0]["text"] == "one" and r.json()["choices"][0]["finish_reason"] == "stop"


async def test_a_stream_is_text_completion_chunks_then_done(client):
    got = chunks(await client.post(URL, json=completion(stream=True)))
    assert all(c["object"] == "text_completion" and c["id"] == got[0]["id"] and "usage" not in c for c in got)
    assert texts(got) == {0: "hello"}
    assert [c["choices"][0]["finish_reason"] for c in got] == [None] * (len(got) - 1) + ["stop"]


async def test_include_usage_adds_a_usage_chunk(client):
    got = chunks(await client.post(URL, json=completion(stream=True, stream_options={"include_usage": True})))
    assert all(c["usage"] is None for c in got[:-1])
    assert got[-1]["choices"] == [] and got[-1]["usage"]["completion_tokens"] == 5


async def test_seeded_sampling_repeats(client):
    ask = completion(turn("abcdefgh"), temperature=1.0, seed=11, max_tokens=8)
    first, second = [(await client.post(URL, json=ask)).json()["choices"] for _ in range(2)]
    assert first == second
    other = (await client.post(URL, json={**ask, "seed": 12})).json()["choices"]
    assert other != first


# ---- several prompts and choices ------------------------------------------------------------


async def test_a_list_of_prompts_runs_one_after_another_on_one_slot(client, app):
    r = await client.post(URL, json=completion([turn("a"), turn("bb"), turn("ccc")]))
    body = r.json()
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "a"), (1, "bb"), (2, "ccc")]
    prompts = sum(len(turn_tokens(t)) for t in ("a", "bb", "ccc"))
    assert body["usage"]["prompt_tokens"] == prompts and body["usage"]["completion_tokens"] == 6


@SLOTS
async def test_choices_are_numbered_prompt_major(client):
    r = await client.post(URL, json=completion([turn("a"), turn("b"), turn("c")], n=2))
    assert [(c["index"], c["text"]) for c in r.json()["choices"]] == \
        [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "c"), (5, "c")]
    got = chunks(await client.post(URL, json=completion([turn("a"), turn("b"), turn("c")], n=2, stream=True)))
    assert texts(got) == {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c"}
    assert sorted(ch["index"] for c in got for ch in c["choices"] if ch["finish_reason"]) == [0, 1, 2, 3, 4, 5]


@SLOTS
async def test_a_list_of_token_lists(client):
    r = await client.post(URL, json=completion([turn_tokens("x"), turn_tokens("yz")]))
    assert [c["text"] for c in r.json()["choices"]] == ["x", "yz"]


@SLOTS
@pytest.mark.parametrize("backend", [{"cls": GatedBackend}], indirect=True)
async def test_a_batch_holds_at_most_the_batch_of_the_engine(app, live_client, gate, monkeypatch):
    """4 slots, n=2: two prompts at a time, the next submitted as one ends."""
    engine = engine_of(app)
    submitted: list[tuple[int, ...]] = []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda request: submitted.append(request.prompt_tokens) or submit(request))
    ask = completion([turn(c * 3) for c in "abcdef"], n=2, stream=True)
    async with live_client.stream("POST", URL, json=ask) as r:
        assert r.status_code == 200
        # the answer has begun (the engine is held): only the first window was submitted
        assert submitted == [tuple(turn_tokens("aaa")), tuple(turn_tokens("bbb"))]
        gate.set()
        body = "".join([part async for part in r.aiter_text()])
    got = parse_sse(body)[:-1]
    assert texts(got) == {i: c * 3 for i, c in enumerate(c for c in "abcdef" for _ in range(2))}
    assert submitted == [tuple(turn_tokens(c * 3)) for c in "abcdef"]


@pytest.mark.parametrize("config", [{"max_n": 2}], indirect=True)
@SLOTS
async def test_n_and_best_of_are_bounded_by_the_batch(client):
    assert_error(await client.post(URL, json=completion(n=3)), 400, param="n")
    assert_error(await client.post(URL, json=completion(best_of=3)), 400, param="best_of")
    assert (await client.post(URL, json=completion(n=2))).status_code == 200


@SLOTS
async def test_best_of_returns_the_best_by_mean_logprob(client):
    ask = completion(turn("abcdef"), temperature=1.0, seed=3, max_tokens=6)
    every = (await client.post(URL, json={**ask, "n": 4, "logprobs": 0})).json()
    means = [sum(c["logprobs"]["token_logprobs"]) / len(c["logprobs"]["token_logprobs"]) for c in every["choices"]]
    ranked = sorted(range(4), key=lambda i: -means[i])
    assert len(set(means)) == 4  # the seeded choices differ, so the ranking means something
    best = (await client.post(URL, json={**ask, "n": 2, "best_of": 4})).json()
    assert [c["text"] for c in best["choices"]] == [every["choices"][i]["text"] for i in ranked[:2]]
    assert [c["index"] for c in best["choices"]] == [0, 1] and all(c["logprobs"] is None for c in best["choices"])
    # every generated token is counted, the unreturned choices' too
    assert best["usage"]["completion_tokens"] == every["usage"]["completion_tokens"]
    with_logprobs = (await client.post(URL, json={**ask, "n": 1, "best_of": 4, "logprobs": 1})).json()
    assert with_logprobs["choices"][0]["text"] == every["choices"][ranked[0]]["text"]
    assert len(with_logprobs["choices"][0]["logprobs"]["tokens"]) > 0


def test_mean_logprob_is_the_ranking_the_test_above_recomputes():
    assert mean_logprob([TokenLogprob(1, "a", -1.0, ()), TokenLogprob(2, "b", -2.0, ())]) == -1.5


# ---- echo and logprobs ---------------------------------------------------------------------


async def test_echo_prepends_the_prompt(client):
    r = await client.post(URL, json=completion(echo=True))
    assert r.json()["choices"][0]["text"] == turn("hello") + "hello"
    got = chunks(await client.post(URL, json=completion(echo=True, stream=True)))
    assert got[0]["choices"][0]["text"] == turn("hello") and texts(got)[0] == turn("hello") + "hello"
    by_ids = (await client.post(URL, json=completion(turn_tokens("hi"), echo=True))).json()
    # token ids echo as their text; control tokens have none
    assert by_ids["choices"][0]["text"] == "user\nhi\nassistant\nhi"


async def test_echo_with_logprobs_scores_the_prompt_as_generating_it_would(client):
    """The prompt's tokens get the logprobs the model gives them in place: scoring a prompt
    followed by a generated answer gives the answer's tokens the logprobs generating them had
    (an off-by-one row would not), the first token null, offsets into the echoed text."""
    said = (await client.post(URL, json=completion(logprobs=2, max_tokens=4))).json()["choices"][0]
    r = await client.post(URL, json=completion(turn("hello") + said["text"], echo=True, logprobs=2, max_tokens=0))
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["text"] == turn("hello") + said["text"] and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    prompt_tokens = len(turn_tokens("hello")) + len(said["logprobs"]["tokens"])
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == prompt_tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["tokens"][-4:] == said["logprobs"]["tokens"]
    assert lp["token_logprobs"][-4:] == said["logprobs"]["token_logprobs"]
    assert lp["top_logprobs"][-4:] == said["logprobs"]["top_logprobs"]
    assert all(x <= 0 for x in lp["token_logprobs"][1:])
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0
    assert body["usage"]["completion_tokens"] == 0 and body["usage"]["prompt_tokens"] == prompt_tokens
    # the whole prompt is computed, though its beginning is in the cache: reused cells have no logits
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@SLOTS
async def test_a_scored_echo_streams_first_and_then_the_answer_s_tokens(client):
    got = chunks(await client.post(URL, json=completion(echo=True, logprobs=1, max_tokens=3, stream=True, n=2)))
    for index in (0, 1):
        mine = [c["choices"][0] for c in got if c["choices"] and c["choices"][0]["index"] == index]
        first = mine[0]
        assert first["text"] == turn("hello") and first["logprobs"]["token_logprobs"][0] is None
        assert len(first["logprobs"]["tokens"]) == len(turn_tokens("hello"))
        later = [t for c in mine[1:] if c["logprobs"] for t in c["logprobs"]["tokens"]]
        assert "".join(later) == "hel"  # the answer's own tokens follow, once each


async def test_logprobs_in_the_legacy_shape(client):
    r = await client.post(URL, json=completion(turn("héllo"), logprobs=2))
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == 6
    # é is two byte tokens: each named by its bytes; the rest join to the text
    assert lp["tokens"] == ["h", "bytes:\\xc3", "bytes:\\xa9", "l", "l", "o"]
    assert lp["text_offset"] == [0, 1, 1, 2, 3, 4]
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert top[token] == logprob and len(top) <= 3
        assert max(top, key=top.get) == token  # greedy: the sampled token is the likeliest
        assert logprob < 0
    streamed = chunks(await client.post(URL, json=completion(turn("héllo"), logprobs=2, stream=True)))
    pieces = [c["choices"][0]["logprobs"] for c in streamed if c["choices"][0]["logprobs"]]
    assert sum((p["tokens"] for p in pieces), []) == lp["tokens"]
    assert sum((p["text_offset"] for p in pieces), []) == lp["text_offset"]


async def test_logprobs_zero_lists_the_sampled_token_only(client):
    lp = (await client.post(URL, json=completion(logprobs=0))).json()["choices"][0]["logprobs"]
    assert lp["top_logprobs"] == [{t: v} for t, v in zip(lp["tokens"], lp["token_logprobs"])]


# ---- fill-in-the-middle -------------------------------------------------------------------


async def test_suffix_on_a_model_without_fim_tokens_is_a_400(client):
    err = assert_error(await client.post(URL, json=completion("def f(", suffix="):")), 400, param="suffix")
    assert "fill-in-the-middle" in err["message"] and MODEL in err["message"]
    # an empty suffix asks for nothing to follow: a plain completion
    assert (await client.post(URL, json=completion(suffix=""))).json()["choices"][0]["text"] == "hello"


@pytest.mark.parametrize("backend", [{"cls": FimBackend}], indirect=True)
async def test_suffix_sends_the_fim_prompt(client, app, monkeypatch):
    engine = engine_of(app)
    sent = []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda request: sent.append(request.prompt_tokens) or submit(request))
    r = await client.post(URL, json=completion("def f(", suffix="):", max_tokens=3))
    assert r.status_code == 200, r.text
    pre, suf, mid = FIM.values()
    assert sent == [(pre, *b"def f(", suf, *b"):", mid)]
    assert r.json()["usage"]["prompt_tokens"] == len(sent[0])


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, param", [
    ({"best_of": 2, "n": 1, "stream": True}, "best_of"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[1, 2], []]}, "prompt[1]"),
    ({"prompt": [1, 99999]}, "prompt[1]"),
    ({"prompt": [[1], [2, 300]]}, "prompt[1][1]"),
    ({"prompt": ""}, "prompt"),
    ({"logprobs": 6}, "logprobs"),
    ({"logit_bias": {"nope": 1}}, "logit_bias.nope"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"tags": ["a"]}, "tags"),
    ({"parent_span_id": "no-such-span"}, "parent_span_id"),
])
async def test_bad_requests_are_openai_shaped_400s(client, fields, param):
    assert_error(await client.post(URL, json=completion(**fields)), 400, type="invalid_request_error", param=param)


@pytest.mark.parametrize("backend", [{"n_ctx": 64}], indirect=True)
async def test_a_prompt_over_the_context_is_context_length_exceeded(client, app):
    err = assert_error(await client.post(URL, json=completion([turn("ok"), "x" * 80])), 400,
                       code="context_length_exceeded", param="prompt[1]")
    assert "64" in err["message"]
    assert_error(await client.post(URL, json=completion(turn("ok"), max_tokens=60)), 400,
                 code="context_length_exceeded", param="max_tokens")
    assert engine_of(app).num_running == 0  # the first prompt was not started either


async def test_unknown_model_is_a_404(client):
    assert_error(await client.post(URL, json=completion(model="nope")), 404, code="model_not_found")


async def test_a_failure_mid_stream_is_an_error_event(client):
    r = await client.post(URL, json=completion(turn("FAIL here"), stream=True))
    events = parse_sse(r.text)
    assert r.status_code == 200 and "error" in events[-1] and DONE not in events
    r = await client.post(URL, json=completion(turn("FAIL here")))
    assert_error(r, 500, code="engine_error")


async def test_upstream_models_pass_through_when_they_serve_completions_else_a_400(tmp_path):
    def upstream(name: str, **fields: Any) -> UpstreamConfig:
        return UpstreamConfig(name=name, base_url=f"http://{name}.test/v1", model="remote", retries=0, timeout=5.0,
                              **fields)

    config = ServerConfig(models=(upstream("up"), upstream("native", supports=("completions",)), ModelConfig(name=MODEL)),
                          database_url=f"sqlite:///{tmp_path / 'r.db'}")
    sent: list[httpx.Request] = []
    answer = {"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "remote",
              "choices": [{"text": " there", "index": 0, "logprobs": None, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if json.loads(request.content).get("stream"):
            body = b"data: " + json.dumps(answer).encode() + b"\n\ndata: [DONE]\n\n"
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=answer)

    app = create_app(config, fake_loader(FakeBackend()), expected_models=(MODEL,), exit_on_load_failure=False,
                     upstream_pool=MockPool(handle))
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
            err = assert_error(await c.post(URL, json=completion(model="up")), 400, param="model")
            assert "upstream" in err["message"] and "supports" in err["message"]
            assert sent == []  # nothing went upstream
            r = await c.post(URL, json=completion("hi", model="native", suffix="x", tags={"a": 1}))
            assert r.status_code == 200 and r.json() == answer
            assert str(sent[0].url) == "http://native.test/v1/completions"
            # the body as sent, the model renamed, Rill's own fields left out
            assert json.loads(sent[0].content) == {"model": "remote", "prompt": "hi", "temperature": 0, "suffix": "x"}
            # what Rill refuses itself (echo with logprobs) is the upstream's to answer
            r = await c.post(URL, json=completion("hi", model="native", echo=True, logprobs=1))
            assert r.status_code == 200 and json.loads(sent[-1].content)["logprobs"] == 1
            r = await c.post(URL, json=completion("hi", model="native", stream=True))
            assert parse_sse(r.text) == [answer, DONE]
            assert (await c.post(URL, json=completion())).status_code == 200  # the local model still answers


# ---- span, metrics, keys, cancellation -------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@SLOTS
async def test_the_request_is_one_span_of_protocol_completions(client, app, stream):
    r = await client.post(URL, json=completion([turn("ab"), turn("cd")], user="ana", tags={"t": 1}, stream=stream,
                                               max_tokens=7))
    assert r.status_code == 200
    completion_id = parse_sse(r.text)[0]["id"] if stream else r.json()["id"]
    await app.state.span_writer.flush()
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["type"] == "completions" and span["meta"]["protocol"] == "completions"
    assert span["status"] == "ok" and span["user"] == "ana" and span["tags"] == {"t": 1}
    assert span["input"] == [turn("ab"), turn("cd")] and span["completion_id"] == completion_id
    assert span["output"] == [{"role": "assistant", "content": "ab"}, {"role": "assistant", "content": "cd"}]
    assert span["usage"]["completion_tokens"] == 4 and span["finish_reason"] == "stop"
    assert span["meta"]["params"]["max_tokens"] == 7 and "prompt" not in span["meta"]["params"]
    assert "ttft_ms" in span["timings"]
    traces = (await client.get("/v1/traces")).json()["data"]
    assert len(traces) == 1  # one span for the request, not one per prompt


async def test_requests_are_counted_by_route(client):
    assert (await client.post(URL, json=completion())).status_code == 200
    assert (await client.post(URL, json=completion(stream=True))).status_code == 200
    assert_error(await client.post(URL, json=completion(max_tokens=-1)), 400)
    text = await scrape(client)
    assert sample(text, "rill_http_requests_total", route=URL, method="POST", status="200") == 2
    assert sample(text, "rill_http_requests_total", route=URL, method="POST", status="400") == 1
    assert sample(text, "rill_prompt_tokens_total", model=MODEL) == 2 * len(turn_tokens("hello"))


@pytest.mark.parametrize("config", [{"api_keys": ("completions-key-0123456789",)}], indirect=True)
async def test_api_keys_are_honoured(client):
    assert_error(await client.post(URL, json=completion()), 401)
    r = await client.post(URL, json=completion(), headers={"authorization": "Bearer completions-key-0123456789"})
    assert r.status_code == 200


@SLOW
@SLOTS
async def test_a_client_that_leaves_aborts_every_prompt(app, live_client, backend):
    ask = completion([turn("x" * 200), turn("y" * 200), turn("z" * 200)], stream=True, max_tokens=200)
    async with live_client.stream("POST", URL, json=ask) as r:
        span_id = r.headers["x-rill-span-id"]
        async for line in r.aiter_lines():
            if '"text":"x' in line or '"text":"y' in line or '"text":"z' in line:
                break
    await wait_until(lambda: engine_idle(app, backend), what="every prompt's engine request is aborted")
    await app.state.span_writer.flush()
    span = (await live_client.get(f"/v1/spans/{span_id}")).json()
    assert span["status"] == "error" and span["error"].startswith("cancelled")


@pytest.mark.parametrize("backend", [{"cls": GatedBackend, "step_delay": 0.05}], indirect=True)
async def test_a_non_streamed_batch_left_mid_way_is_aborted(app, live_client, backend, gate):
    ask = completion([turn("a" * 200), turn("b" * 200)], max_tokens=200)
    task = asyncio.create_task(live_client.post(URL, json=ask))
    await wait_until(lambda: engine_of(app).num_running == 1, what="the first prompt runs")
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: engine_idle(app, backend), what="the batch is aborted")


async def test_the_openapi_document_lists_the_endpoint(client):
    doc = (await client.get("/openapi.json")).json()
    op = doc["paths"][URL]["post"]
    assert op["operationId"] == "createCompletion"
    schema = doc["components"]["schemas"]["CompletionRequest"]
    assert {"prompt", "suffix", "best_of", "echo", "logprobs", "stream_options"} <= set(schema["properties"])
    assert schema["required"] == ["prompt"]
    # the chat request's stream options keep their own schema
    assert "include_obfuscation" in doc["components"]["schemas"]["StreamOptions"]["properties"]
