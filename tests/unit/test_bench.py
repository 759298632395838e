"""`rill bench` pieces without a server: stats, SSE parsing, prompt sets, one streamed request
over a mock transport, the report, and the argparse wiring."""

from __future__ import annotations

import argparse
import asyncio
import io
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rill.bench.command import add_bench_parser, options_from_args, run_bench
from rill.bench.prompts import PROMPT_SETS, SHARED_SYSTEM_PROMPT, make_prompts, predictions
from rill.bench.report import compare_rows, format_table, to_json, write_json
from rill.bench.runner import (
    BenchError, BenchOptions, BenchResult, Progress, Target, base_url, request_body, run, run_level, stream_one,
)
from rill.bench.sse import SSEParser
from rill.bench.stats import RequestResult, percentile, ratio, summarize

# ---- stats --------------------------------------------------------------------------------------


def test_percentile_of_an_empty_list_is_none():
    assert percentile([], 50) is None


@pytest.mark.parametrize("p", [0, 50, 90, 99, 100])
def test_percentile_of_one_value_is_that_value(p):
    assert percentile([7.5], p) == 7.5


def test_percentile_interpolates_linearly_between_ranks():
    xs = [10, 1, 4, 3, 2, 9, 8, 7, 6, 5]  # unsorted on purpose: 1..10
    assert percentile(xs, 0) == 1
    assert percentile(xs, 100) == 10
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile(xs, 99) == pytest.approx(9.91)
    assert percentile([1, 2], 50) == pytest.approx(1.5)


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_ttft_and_itl_come_from_chunk_arrival_times():
    r = RequestResult(start=1.0, token_times=[1.25, 1.3, 1.5, 1.5])
    assert r.ttft == pytest.approx(0.25)
    assert r.inter_token_latencies == pytest.approx([0.05, 0.2, 0.0])
    empty = RequestResult(start=1.0)
    assert empty.ttft is None and empty.inter_token_latencies == []
    assert RequestResult(start=0.0, token_times=[0.5]).inter_token_latencies == []


def test_output_tokens_come_from_usage_and_fall_back_to_chunks():
    assert RequestResult(start=0, token_times=[1, 2], completion_tokens=9).output_tokens == 9
    assert RequestResult(start=0, token_times=[1, 2, 3]).output_tokens == 3


def test_summarize_counts_tokens_of_successes_over_wall_clock():
    good = [RequestResult(start=0.0, end=1.0, token_times=[0.1, 0.2, 0.4], completion_tokens=30),
            RequestResult(start=0.0, end=1.0, token_times=[0.3, 0.4], completion_tokens=10)]
    bad = [RequestResult(start=0.0, end=0.5, token_times=[0.2], completion_tokens=99, error="HTTP 500",
                         detail="boom"),
           RequestResult(start=0.0, end=0.5, error="HTTP 500"),
           RequestResult(start=0.0, end=0.5, error="timeout")]
    lv = summarize("A", 4, requests=6, results=good + bad, wall_s=2.0)
    assert (lv.completed, lv.errors, lv.not_run) == (2, 3, 1)
    assert lv.output_tokens == 40  # the failed request's 99 are not counted
    assert lv.output_tokens_per_s == pytest.approx(20.0)
    assert lv.requests_per_s == pytest.approx(1.0)
    assert lv.ttft_ms["p50"] == pytest.approx(200.0)  # ttfts 100 ms and 300 ms
    assert lv.ttft_ms["p99"] == pytest.approx(298.0)
    assert lv.itl_ms["p50"] == pytest.approx(100.0)  # itls 100, 200, 100 ms
    assert lv.error_kinds == {"HTTP 500": 2, "timeout": 1}
    assert lv.error_examples == {"HTTP 500": "boom", "timeout": "timeout"}


def test_summarize_with_no_results_has_no_latencies():
    lv = summarize("B", 1, requests=3, results=[], wall_s=0.0)
    assert lv.completed == 0 and lv.not_run == 3
    assert lv.ttft_ms == {"p50": None, "p90": None, "p99": None}
    assert lv.itl_ms == {"p50": None, "p99": None}
    assert lv.output_tokens_per_s is None and lv.requests_per_s is None


def test_ratio():
    assert ratio(6.0, 3.0) == 2.0
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None and ratio(1.0, None) is None


# ---- SSE ---------------------------------------------------------------------------------------

RECORDED = (
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9 \xf0\x9f\x99\x82"}}]}\r\n\r\n'
    b'event: message\ndata: {"choices":[{"delta":{"content":"x"}}]}\n\n'
    b"data:line one\ndata: line two\r\r"
    b"data: crlf one\r\ndata: crlf two\r\n\r\n"
    b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    '{"choices":[{"delta":{"role":"assistant","content":""}}]}',
    '{"choices":[{"delta":{"content":"café 🙂"}}]}',
    '{"choices":[{"delta":{"content":"x"}}]}',
    "line one\nline two",
    "crlf one\ncrlf two",
    '{"choices":[],"usage":{"completion_tokens":2}}',
    "[DONE]",
]


def _feed_split(data: bytes, cuts: list[int]) -> list[str]:
    parser = SSEParser()
    out: list[str] = []
    prev = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += parser.feed(data[prev:cut])
        prev = cut
    return out + parser.close()


def test_sse_parses_a_recorded_stream_fed_whole():
    assert _feed_split(RECORDED, []) == EXPECTED


def test_sse_split_once_at_every_position():
    for cut in range(len(RECORDED) + 1):
        assert _feed_split(RECORDED, [cut]) == EXPECTED, cut


def test_sse_byte_by_byte():
    assert _feed_split(RECORDED, list(range(len(RECORDED)))) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_sse_parses_the_same_events_however_the_bytes_are_split(cuts):
    assert _feed_split(RECORDED, cuts) == EXPECTED


def test_sse_drops_an_unterminated_event():
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == ["a"]
    assert parser.close() == []


# ---- prompts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROMPT_SETS)
def test_prompt_sets_are_deterministic_and_distinct(kind):
    a, b = make_prompts(kind, 40), make_prompts(kind, 40)
    assert a == b
    assert len(a) == 40
    assert len({json.dumps(m) for m in a}) == 40
    for messages in a:
        assert messages[-1]["role"] == "user" and messages[-1]["content"]


def test_short_prompts_are_short():
    assert all(len(m[-1]["content"]) < 200 for m in make_prompts("short", 50))


def test_long_prompts_are_about_500_tokens():
    for messages in make_prompts("long", 10):
        chars = sum(len(m["content"]) for m in messages)
        assert 2400 <= chars <= 4000, chars  # ~5.9 characters per token for SmolLM2


def test_shared_prefix_prompts_share_a_long_system_prompt():
    prompts = make_prompts("shared-prefix", 10)
    assert all(m[0] == {"role": "system", "content": SHARED_SYSTEM_PROMPT} for m in prompts)
    assert len(SHARED_SYSTEM_PROMPT) >= 1800
    assert len({m[1]["content"] for m in prompts}) == 10


def test_edit_prompts_carry_the_code_their_prediction_is():
    prompts, predicted = make_prompts("edit", 10), predictions("edit", 10)
    for messages, prediction in zip(prompts, predicted):
        ask = messages[-1]["content"]
        assert prediction.startswith("```python\n") and prediction.endswith("```")
        assert prediction in ask  # the answer is this code, one name changed
        assert 600 <= len(prediction) <= 1600  # ~250 tokens
    assert predictions("short", 3) == [None, None, None]


def test_unknown_prompt_set_is_refused():
    with pytest.raises(ValueError):
        make_prompts("medium", 1)


# ---- one request over a mock transport ---------------------------------------------------------


def _sse(*objs) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


def _chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


GOOD_STREAM = _sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    _chunk("he"), _chunk("llo"),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}},
    b"[DONE]",
)


async def _one(handler) -> tuple[RequestResult, list[dict]]:
    seen: list[dict] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return await handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record), base_url="http://bench.test") as c:
        result = RequestResult(start=0.0)
        await stream_one(c, request_body("m", [{"role": "user", "content": "hi"}], max_tokens=7, seed=3),
                         result)
    return result, seen


async def test_stream_one_records_tokens_usage_and_sends_the_contract_body():
    async def handler(request):
        return httpx.Response(200, content=GOOD_STREAM, headers={"content-type": "text/event-stream"})

    result, [body] = await _one(handler)
    assert result.ok, result.detail
    assert len(result.token_times) == 2  # the role chunk's empty content is not a token
    assert result.completion_tokens == 4 and result.output_tokens == 4
    assert result.end is not None
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "stream_options": {"include_usage": True}, "max_tokens": 7, "temperature": 0,
                    "seed": 3}


@pytest.mark.parametrize(("response", "kind"), [
    (httpx.Response(503, json={"error": {"message": "loading"}}), "HTTP 503"),
    (httpx.Response(200, content=_sse(_chunk("a"), {"error": {"message": "engine died"}})), "error event"),
    (httpx.Response(200, content=_sse(_chunk("a"))), "incomplete stream"),
    (httpx.Response(200, content=_sse(b"{not json")), "bad event"),
])
async def test_stream_one_counts_failures_without_raising(response, kind):
    async def handler(request):
        return response

    result, _ = await _one(handler)
    assert result.error == kind
    assert result.detail


async def test_stream_one_counts_transport_errors():
    async def handler(request):
        raise httpx.ConnectError("refused", request=request)

    result, _ = await _one(handler)
    assert result.error == "connect error"


async def test_a_level_stops_at_its_timeout_and_counts_what_did_not_finish():
    never = asyncio.Event()

    async def handler(request):
        await never.wait()  # a server that never answers
        raise AssertionError("unreachable")

    target = Target("A", "http://bench.test", "m")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://bench.test") as c:
        lv = await asyncio.wait_for(
            run_level(c, target, make_prompts("short", 5), concurrency=2, requests=5, max_tokens=4,
                      timeout=0.2), 30)
    assert lv.timed_out
    assert (lv.completed, lv.errors, lv.not_run) == (0, 2, 3)
    assert lv.error_kinds == {"level timeout": 2}


async def test_run_alternates_servers_per_level_with_identical_requests():
    bodies: dict[str, list[dict]] = {"A": [], "B": []}

    def server(label: str, model: str):
        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/models":
                return httpx.Response(200, json={"object": "list", "data": [{"id": model}, {"id": "other"}]})
            bodies[label].append(json.loads(request.content))
            return httpx.Response(200, content=GOOD_STREAM)
        return httpx.MockTransport(handler)

    options = BenchOptions(url="http://a.test/v1/", compare_url="http://b.test", concurrency=(1, 3),
                           requests=4, max_tokens=16)
    progress = io.StringIO()
    result = await run(options, transport=server("A", "model-a"), compare_transport=server("B", "model-b"),
                       progress=Progress(progress))
    assert [(t.label, t.url, t.model) for t in result.targets] == [
        ("A", "http://a.test", "model-a"), ("B", "http://b.test", "model-b")]
    assert [(lv.server, lv.concurrency) for lv in result.levels] == [("A", 1), ("B", 1), ("A", 3), ("B", 3)]
    assert all(lv.completed == 4 and lv.errors == 0 and lv.output_tokens == 16 for lv in result.levels)
    assert result.ok
    strip = lambda bs: sorted(json.dumps({k: v for k, v in b.items() if k != "model"}, sort_keys=True) for b in bs)
    assert strip(bodies["A"]) == strip(bodies["B"])
    assert len(bodies["A"]) == 8
    assert {b["seed"] for b in bodies["A"]} == {0, 1, 2, 3}
    assert "[B] concurrency 3: 4/4 done, 0 errors" in progress.getvalue()
    assert "\r" not in progress.getvalue()  # not a TTY: no redrawing


async def test_predict_compare_runs_one_server_without_then_with_predictions_and_compares_outputs():
    bodies: list[dict] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        body = json.loads(request.content)
        bodies.append(body)
        predicted = "prediction" in body
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "completion_tokens_details": {
            "accepted_prediction_tokens": 5 if predicted else 0, "rejected_prediction_tokens": 1 if predicted else 0}}
        # request seed 1 answers differently with a prediction: one output is not the same
        text = "other" if predicted and body["seed"] == 1 else "same"
        return httpx.Response(200, content=_sse(_chunk(text), {"choices": [], "usage": usage}, b"[DONE]"))

    options = BenchOptions(url="http://a.test", concurrency=(2,), requests=3, prompts="edit", predict="compare")
    result = await run(options, transport=httpx.MockTransport(handler), progress=Progress(io.StringIO()))
    assert [(t.label, t.predicts) for t in result.targets] == [("A", False), ("B", True)]
    with_prediction = [b for b in bodies if "prediction" in b]
    assert len(with_prediction) == 3 and len(bodies) == 6
    assert {b["prediction"]["content"] for b in with_prediction} == set(predictions("edit", 3))
    b_level = result.levels[1]
    assert (b_level.accepted_prediction_tokens, b_level.rejected_prediction_tokens) == (15, 3)
    row = compare_rows(result)[0]
    assert (row["same_outputs"], row["compared_outputs"]) == (2, 3)
    text = format_table(result)
    assert "prediction tokens (usage):" in text and "2/3" in text and "83.3" in text


async def test_predict_needs_a_prompt_set_with_predictions():
    with pytest.raises(BenchError, match="--prompts edit"):
        await run(BenchOptions(url="http://a.test", predict="on"), transport=httpx.MockTransport(lambda r: None))


def test_base_url_normalises():
    assert base_url("http://h:1/") == base_url("http://h:1/v1") == base_url("http://h:1") == "http://h:1"


# ---- report ------------------------------------------------------------------------------------


def _result(compare: bool) -> BenchResult:
    options = BenchOptions(concurrency=(1, 4), requests=2, compare_url="http://b" if compare else None)
    targets = [Target("A", "http://a", "ma")] + ([Target("B", "http://b", "mb")] if compare else [])
    result = BenchResult(options, targets)
    for conc in (1, 4):
        for t in targets:
            tok = 20 if t.label == "A" else 10
            rs = [RequestResult(start=0.0, end=1.0, token_times=[0.1 * (1 + (t.label == "B")), 0.5],
                                completion_tokens=tok)]
            rs.append(RequestResult(start=0.0, end=0.1, error="HTTP 429", detail="queue full"))
            result.levels.append(summarize(t.label, conc, 2, rs, wall_s=1.0))
    return result


def test_table_has_a_row_per_level_and_the_error_summary():
    text = format_table(_result(compare=False))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("server"))
    for col in ("TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "out tok/s", "req/s",
                "errors"):
        assert col in lines[header]
    rows = [line.split() for line in lines[header + 2: header + 4]]
    assert [r[:4] for r in rows] == [["A", "1", "1", "1"], ["A", "4", "1", "1"]]
    assert rows[0][5] == "20.0"  # out tok/s
    assert rows[0][6] == "47.5"  # stream tok/s: 19 tokens after the first in 0.4 s
    assert rows[0][7] == "100.0"  # TTFT p50 ms
    assert "1 x HTTP 429: queue full" in text
    assert "A/B" not in text


def test_compare_table_and_ratios():
    result = _result(compare=True)
    rows = compare_rows(result)
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert rows[0]["output_tokens_per_s_ratio"] == pytest.approx(2.0)
    assert rows[0]["ttft_p50_ratio"] == pytest.approx(0.5)
    text = format_table(result)
    assert "tok/s A/B" in text and "TTFT p50 A/B" in text
    assert "2.00" in text and "0.50" in text


def test_json_shape(tmp_path):
    result = _result(compare=True)
    path = tmp_path / "out.json"
    write_json(result, str(path))
    doc = json.loads(path.read_text())
    assert doc == json.loads(json.dumps(to_json(result)))
    assert set(doc) == {"version", "options", "servers", "levels", "compare", "ok"}
    assert doc["ok"] is False
    assert doc["servers"] == {"A": {"url": "http://a", "model": "ma", "predicts": False},
                              "B": {"url": "http://b", "model": "mb", "predicts": False}}
    assert doc["options"]["concurrency"] == [1, 4]
    level = doc["levels"][0]
    assert set(level) >= {"server", "concurrency", "requests", "completed", "errors", "not_run", "wall_s",
                          "requests_per_s", "output_tokens", "output_tokens_per_s", "ttft_ms", "itl_ms",
                          "error_kinds", "timed_out"}
    assert set(level["ttft_ms"]) == {"p50", "p90", "p99"} and set(level["itl_ms"]) == {"p50", "p99"}
    assert level["error_kinds"] == {"HTTP 429": 1}
    assert len(doc["compare"]) == 2 and doc["compare"][0]["output_tokens_per_s_ratio"] == pytest.approx(2.0)
    assert to_json(_result(compare=False))["compare"] is None


# ---- argparse ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rill")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    return parser


def test_defaults():
    args = _parser().parse_args(["bench"])
    assert args.command == "bench"
    o = options_from_args(args)
    assert o == BenchOptions()
    assert (o.url, o.model, o.concurrency, o.requests, o.prompts, o.max_tokens) == (
        "http://127.0.0.1:8000", None, (1, 4, 16), 32, "short", 128)
    assert args.json_path is None and o.compare_url is None and o.compare_model is None


def test_a_full_command_line():
    args = _parser().parse_args([
        "bench", "--url", "http://h:1", "--model", "m", "--concurrency", "2, 8,1", "--requests", "10",
        "--prompts", "shared-prefix", "--max-tokens", "64", "--timeout", "12.5", "--json", "out.json",
        "--compare", "http://h:2", "--compare-model", "m2", "--seed", "5",
        "--extra-body", '{"response_format": {"type": "json_object"}}'])
    assert options_from_args(args) == BenchOptions(
        url="http://h:1", model="m", concurrency=(2, 8, 1), requests=10, prompts="shared-prefix",
        max_tokens=64, timeout=12.5, compare_url="http://h:2", compare_model="m2", seed=5,
        extra_body={"response_format": {"type": "json_object"}})
    assert args.json_path == "out.json"


@pytest.mark.parametrize("argv", [
    ["--concurrency", "0"], ["--concurrency", "1,x"], ["--concurrency", ","], ["--requests", "0"],
    ["--requests", "1000000000"], ["--prompts", "medium"], ["--max-tokens", "0"], ["--timeout", "0"],
    ["--timeout", "inf"], ["--timeout", "nan"], ["--extra-body", "[1]"], ["--extra-body", "{bad"],
    ["--extra-body", '{"stream": false}'], ["--extra-body", "@/nonexistent/body.json"],
])
def test_bad_values_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["bench", *argv])
    assert exc.value.code == 2


def test_extra_body_from_a_file_is_merged_into_every_request(tmp_path):
    path = tmp_path / "body.json"
    path.write_text('{"tools": [], "temperature": 0.5}')
    extra = options_from_args(_parser().parse_args(["bench", "--extra-body", f"@{path}"])).extra_body
    body = request_body("m", [], max_tokens=1, seed=0, extra=extra)
    assert body["tools"] == [] and body["temperature"] == 0.5 and body["stream"] is True


async def test_tool_call_fragments_count_as_tokens():
    frag = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
                         "finish_reason": None}]}
    stream = _sse(frag, frag, {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})

    async def handler(request):
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})

    result, _ = await _one(handler)
    assert result.ok and len(result.token_times) == 2


def test_compare_model_without_compare_is_a_usage_error(capsys):
    assert run_bench(_parser().parse_args(["bench", "--compare-model", "x"])) == 2
    assert "--compare" in capsys.readouterr().err


def test_long_answer_prompts_are_short_and_ask_for_long_answers():
    prompts = make_prompts("long-answer", 25)
    for messages in prompts:
        content = messages[-1]["content"]
        assert 330 <= len(content) <= 450, len(content)  # ~105 tokens with the template (SmolLM2: 106-109)
        assert "at least 600 words" in content
    assert len({m[-1]["content"] for m in prompts}) == 25  # past the 20 topics, drafts differ
