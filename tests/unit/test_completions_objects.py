"""Legacy completions: core events -> `text_completion` chunks and objects, on synthetic events:
the legacy logprobs shape, echo, choices numbered prompt-major, best_of's ranking, usage."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rill.api.core.events import CallStart, Finish, ReasoningOut, TextOut, Usage
from rill.api.protocols.completions.logprobs import LegacyLogprobs, mean_logprob, token_string
from rill.api.protocols.completions.mapping import options
from rill.api.protocols.completions.objects import TextCompletion, finish_reason
from rill.engine.types import TokenLogprob
from tests.unit.completions_support import body

NAMES = {1: "He", 2: "llo", 3: " world", 4: "<|im_end|>", 5: "!", 6: "é"}


def key(token: int) -> str:
    return NAMES.get(token, f"t{token}")


def lp(token: int, logprob: float, *top: tuple[int, float], text: str | None = None) -> TokenLogprob:
    return TokenLogprob(token, NAMES[token] if text is None else text, logprob, tuple(top))


def builder(echoes: list[str] = ["Say"], **fields: Any) -> TextCompletion:
    return TextCompletion(id="cmpl-1", created=5, model="m", fingerprint="fp", opts=options(body(**fields)),
                          echoes=echoes, key=key)


def finish(index: int = 0, reason: str = "stop", prompt: int = 3, completion: int = 2, cached: int = 0) -> Finish:
    return Finish(index, reason, Usage(prompt, completion, cached))  # type: ignore[arg-type]


# ---- the legacy logprobs shape -----------------------------------------------------------------


def test_logprobs_are_parallel_lists_with_offsets_into_the_text():
    out = LegacyLogprobs(2, key)
    first = out.add([lp(1, -0.1, (1, -0.1), (3, -2.0)), lp(2, -0.5, (5, -0.2), (2, -0.5))])
    assert first == {"tokens": ["He", "llo"], "token_logprobs": [-0.1, -0.5],
                     "top_logprobs": [{"He": -0.1, " world": -2.0}, {"!": -0.2, "llo": -0.5}],
                     "text_offset": [0, 2]}
    second = out.add([lp(3, -1.5, (5, -0.3), (4, -0.9))])
    # the sampled token is always in top_logprobs, as OpenAI documents (up to logprobs + 1 entries)
    assert second["top_logprobs"] == [{"!": -0.3, "<|im_end|>": -0.9, " world": -1.5}]
    assert second["text_offset"] == [5]  # the offsets run on across pieces
    assert out.whole()["tokens"] == ["He", "llo", " world"] and out.whole()["text_offset"] == [0, 2, 5]


def test_logprobs_zero_gives_the_sampled_token_alone_and_only_k_alternatives_are_kept():
    out = LegacyLogprobs(0, key)
    assert out.add([lp(1, -0.1, (1, -0.1), (3, -2.0))])["top_logprobs"] == [{"He": -0.1}]
    assert LegacyLogprobs(1, key).add([lp(2, -0.5, (5, -0.2), (2, -0.5))])["top_logprobs"] == [{"!": -0.2, "llo": -0.5}]


def test_a_token_inside_a_character_is_named_by_its_bytes_and_offsets_index_the_text():
    spelled = {10: b"\xc3", 11: b"\xa9", 5: b"!"}
    out = LegacyLogprobs(1, lambda t: token_string(spelled[t]))
    got = out.add([TokenLogprob(10, "", -0.1, ((10, -0.1),)), TokenLogprob(11, "é", -0.2, ((5, -0.5),)),
                   TokenLogprob(5, "!", -0.3, ())])
    assert got["tokens"] == ["bytes:\\xc3", "bytes:\\xa9", "!"]
    assert got["top_logprobs"] == [{"bytes:\\xc3": -0.1}, {"!": -0.5, "bytes:\\xa9": -0.2}, {"!": -0.3}]
    text = "é!"
    assert got["text_offset"] == [0, 0, 1] and text[got["text_offset"][2]:] == "!"


def test_token_strings():
    assert token_string("é".encode()) == "é" and token_string(b"<|im_end|>") == "<|im_end|>"
    assert token_string(b"\xe2\x80") == "bytes:\\xe2\\x80"


def test_two_tokens_with_the_same_text_keep_the_likelier():
    names = {7: "a", 8: "a"}
    out = LegacyLogprobs(2, lambda t: names[t])
    got = out.add([TokenLogprob(7, "a", -0.4, ((8, -0.1), (7, -0.4)))])
    assert got["top_logprobs"] == [{"a": -0.1}]


def test_mean_logprob_ranks_an_empty_choice_last():
    assert mean_logprob([lp(1, -1.0), lp(2, -3.0)]) == -2.0
    assert mean_logprob([]) == -math.inf


# ---- chunks ----------------------------------------------------------------------------------


def test_a_stream_sends_text_chunks_then_a_finish_chunk_per_choice():
    c = builder(stream=True)
    chunks = c.event(0, TextOut(0, "Hel")) + c.event(0, TextOut(0, "lo")) + c.event(0, finish(reason="length"))
    assert [ch["choices"] for ch in chunks] == [
        [{"text": "Hel", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "lo", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}]]
    assert all(ch["object"] == "text_completion" and ch["id"] == "cmpl-1" and ch["model"] == "m"
               and ch["created"] == 5 and ch["system_fingerprint"] == "fp" and "usage" not in ch for ch in chunks)


def test_include_usage_puts_null_usage_on_chunks_and_a_last_usage_chunk():
    c = builder(["a", "b"], stream=True, stream_options={"include_usage": True}, prompt=["a", "b"])
    chunks = c.event(0, TextOut(0, "x")) + c.event(1, finish(prompt=4, completion=1, cached=2)) + \
        c.event(0, finish(prompt=3, completion=5))
    assert all(ch["usage"] is None for ch in chunks)
    assert c.usage_chunk()["choices"] == []
    assert c.usage_chunk()["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13,
                                        "prompt_tokens_details": {"cached_tokens": 2}}


def test_stream_chunks_carry_each_pieces_logprobs():
    c = builder(stream=True, logprobs=1)
    chunks = c.event(0, TextOut(0, "Hello", (lp(1, -0.1, (1, -0.1)), lp(2, -0.2, (5, -0.1)))))
    assert chunks[0]["choices"][0]["logprobs"] == {
        "tokens": ["He", "llo"], "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{"He": -0.1}, {"!": -0.1, "llo": -0.2}], "text_offset": [0, 2]}
    later = c.event(0, TextOut(0, " world", (lp(3, -0.3, (3, -0.3)),)))
    assert later[0]["choices"][0]["logprobs"]["text_offset"] == [5]


def test_echo_streams_the_prompt_first_for_each_choice():
    c = builder(["Say", "Tell"], stream=True, echo=True, n=2, prompt=["Say", "Tell"])
    first = c.event(1, TextOut(1, " it"))
    assert [ch["choices"][0]["text"] for ch in first] == ["Tell", " it"]
    assert [ch["choices"][0]["index"] for ch in first] == [3, 3]  # prompt 1's choice 1
    assert [ch["choices"][0]["text"] for ch in c.event(1, TextOut(1, "!"))] == ["!"]  # once
    # a choice whose first event is its finish still gets the prompt
    assert [ch["choices"][0]["text"] for ch in c.event(0, finish(1))] == ["Say", ""]


def test_choices_are_numbered_prompt_major():
    c = builder(["a", "b", "c"], n=2, prompt=["a", "b", "c"])
    for prompt in (2, 0, 1):
        for index in (1, 0):
            c.event(prompt, TextOut(index, f"p{prompt}c{index}"))
            c.event(prompt, finish(index))
    got = [(ch["index"], ch["text"]) for ch in c.completion()["choices"]]
    assert got == [(0, "p0c0"), (1, "p0c1"), (2, "p1c0"), (3, "p1c1"), (4, "p2c0"), (5, "p2c1")]


def test_reasoning_is_text_and_tool_call_events_send_nothing():
    c = builder(stream=True)
    assert c.event(0, ReasoningOut(0, "think"))[0]["choices"][0]["text"] == "think"
    assert c.event(0, CallStart(0, 0, "id", "f")) == []
    c.event(0, TextOut(0, "!"))
    c.event(0, finish())
    assert c.completion()["choices"][0]["text"] == "think!"


def test_an_empty_text_event_without_logprobs_sends_no_chunk():
    assert builder(stream=True).event(0, TextOut(0, "")) == []


# ---- the whole completion -------------------------------------------------------------------


def test_the_completion_object():
    c = builder(logprobs=0)
    c.event(0, TextOut(0, "He", (lp(1, -0.1, (1, -0.1)),)))
    c.event(0, TextOut(0, "llo", (lp(2, -0.2, (2, -0.2)),)))
    c.event(0, finish(reason="stop_sequence", prompt=3, completion=2))
    assert c.completion() == {
        "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m", "system_fingerprint": "fp",
        "choices": [{"text": "Hello", "index": 0, "finish_reason": "stop", "logprobs": {
            "tokens": ["He", "llo"], "token_logprobs": [-0.1, -0.2], "top_logprobs": [{"He": -0.1}, {"llo": -0.2}],
            "text_offset": [0, 2]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 0}}}


def test_echo_prepends_the_prompt_to_the_text():
    c = builder(["Say this"], echo=True)
    c.event(0, TextOut(0, " twice"))
    c.event(0, finish())
    assert c.completion()["choices"][0]["text"] == "Say this twice"


def test_echo_moves_logprob_offsets_past_the_prompt():
    out = LegacyLogprobs(0, key)
    out.skip("Say")
    assert out.add([lp(1, -0.1)])["text_offset"] == [3]


def test_best_of_returns_the_n_best_by_mean_logprob_best_first_without_logprobs():
    c = builder(["a", "b"], n=2, best_of=3, prompt=["a", "b"])
    means = {0: [-2.0, -2.0], 1: [-0.5], 2: [-1.0, -0.5]}  # means -2, -0.5, -0.75
    for prompt in (0, 1):
        for index, values in means.items():
            c.event(prompt, TextOut(index, f"c{index}", tuple(lp(1, v) for v in values)))
            c.event(prompt, finish(index, completion=len(values)))
    choices = c.completion()["choices"]
    assert [(ch["index"], ch["text"]) for ch in choices] == [(0, "c1"), (1, "c2"), (2, "c1"), (3, "c2")]
    assert all(ch["logprobs"] is None for ch in choices)  # ranked with logprobs nobody asked to see
    # every generated token is counted, the unreturned choices' too
    assert c.completion()["usage"]["completion_tokens"] == 2 * 5


def test_best_of_ties_keep_the_earlier_choice_and_an_empty_choice_ranks_last():
    c = builder(n=1, best_of=3)
    c.event(0, finish(0, completion=0))  # ended at once: no tokens
    c.event(0, TextOut(1, "x", (lp(1, -1.0),)))
    c.event(0, finish(1))
    c.event(0, TextOut(2, "y", (lp(1, -1.0),)))
    c.event(0, finish(2))
    assert c.returned(0) == [1]


@pytest.mark.parametrize("reason, wire", [("stop", "stop"), ("stop_sequence", "stop"), ("length", "length"),
                                          ("tool_calls", "stop")])
def test_finish_reasons(reason, wire):
    assert finish_reason(finish(reason=reason)) == wire
