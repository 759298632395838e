"""Legacy completions: `prompt` -> the exact tokens the model reads (no chat template; BOS as the
model adds it to raw text; token ids as sent), fill-in-the-middle with `suffix`, and the 400s
for prompts that cannot run (ids outside the vocabulary, empty, over the context)."""

from __future__ import annotations

import dataclasses

import pytest

from rill.api.protocols.completions.fim import FIM_NAMES, find_fim, fim_tokens, no_fim_message
from rill.api.protocols.completions.prompts import MAX_PROMPTS, RawPrompt, check_fits, prepare, split_prompts
from rill.backends.fake import IM_END, IM_START, FakeBackend
from rill.errors import ContextLengthExceeded, InvalidRequest
from tests.unit.completions_support import FIM, FimBackend, model_on


def test_each_prompt_shape_splits_into_prompts_named_as_sent():
    assert split_prompts("hi") == [RawPrompt("prompt", text="hi")]
    assert split_prompts(["a", "b"]) == [RawPrompt("prompt[0]", text="a"), RawPrompt("prompt[1]", text="b")]
    assert split_prompts([5, 6]) == [RawPrompt("prompt", tokens=(5, 6))]
    assert split_prompts([[5], [6, 7]]) == [RawPrompt("prompt[0]", tokens=(5,)), RawPrompt("prompt[1]", tokens=(6, 7))]


@pytest.mark.parametrize("prompt, param", [([], "prompt"), ([[1], []], "prompt[1]"),
                                           (["x"] * (MAX_PROMPTS + 1), "prompt")])
def test_empty_lists_and_too_many_prompts_are_400s(prompt, param):
    with pytest.raises(InvalidRequest) as caught:
        split_prompts(prompt)
    assert caught.value.param == param


def test_a_long_token_list_is_one_prompt_not_too_many():
    assert len(split_prompts(list(range(MAX_PROMPTS + 5)))) == 1


def test_text_is_read_raw_with_control_tokens_parsed_and_no_template():
    model = model_on()
    ready = prepare(model, RawPrompt("prompt", text="<|im_start|>user\nhi<|im_end|>"), max_tokens=4)
    assert ready.tokens == (IM_START, *b"user\nhi", IM_END)
    assert ready.echo == "<|im_start|>user\nhi<|im_end|>"


def test_bos_is_added_to_text_as_the_model_adds_it_but_not_twice_nor_to_token_ids():
    model = model_on(add_bos=True)
    assert prepare(model, RawPrompt("prompt", text="hi"), max_tokens=1).tokens == (IM_START, *b"hi")
    assert prepare(model, RawPrompt("prompt", text="<|im_start|>hi"), max_tokens=1).tokens == (IM_START, *b"hi")
    assert prepare(model, RawPrompt("prompt", tokens=(104, 105)), max_tokens=1).tokens == (104, 105)
    assert prepare(model_on(), RawPrompt("prompt", text="hi"), max_tokens=1).tokens == tuple(b"hi")


def test_token_ids_are_taken_exactly_and_echoed_as_their_text():
    ready = prepare(model_on(), RawPrompt("prompt", tokens=(IM_START, *"héllo".encode())), max_tokens=1)
    assert ready.tokens == (IM_START, *"héllo".encode())
    assert ready.echo == "héllo"  # control tokens add no text, as /detokenize says


@pytest.mark.parametrize("token", [-1, 258, 10**6])
def test_an_id_outside_the_vocabulary_is_a_400_naming_it(token):
    with pytest.raises(InvalidRequest) as caught:
        prepare(model_on(), RawPrompt("prompt[1]", tokens=(1, token)), max_tokens=1)
    assert caught.value.param == "prompt[1][1]" and "0..257" in caught.value.message


def test_an_empty_prompt_is_bos_alone_or_a_400_for_a_model_without_bos():
    assert prepare(model_on(add_bos=True), RawPrompt("prompt", text=""), max_tokens=1).tokens == (IM_START,)
    with pytest.raises(InvalidRequest) as caught:
        prepare(model_on(), RawPrompt("prompt[0]", text=""), max_tokens=1)
    assert caught.value.param == "prompt[0]" and "empty" in caught.value.message


def test_prompts_over_the_context_are_context_length_exceeded():
    model = model_on(FakeBackend(n_ctx=64))
    with pytest.raises(ContextLengthExceeded) as caught:
        prepare(model, RawPrompt("prompt[2]", text="x" * 64), max_tokens=1)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "prompt[2]"
    with pytest.raises(ContextLengthExceeded) as caught:
        prepare(model, RawPrompt("prompt", tokens=(65,) * 64), max_tokens=1)
    assert caught.value.param == "prompt"
    # the prompt fits, its completion cap does not
    with pytest.raises(ContextLengthExceeded) as caught:
        prepare(model, RawPrompt("prompt", text="x" * 60), max_tokens=5)
    assert caught.value.param == "max_tokens" and "60 in the prompt" in caught.value.message
    assert len(prepare(model, RawPrompt("prompt", text="x" * 60), max_tokens=4).tokens) == 60


def test_check_fits_bounds():
    check_fits("prompt", 10, 6, 16)
    with pytest.raises(ContextLengthExceeded):
        check_fits("prompt", 10, 7, 16)
    with pytest.raises(ContextLengthExceeded):
        check_fits("prompt", 16, 1, 16)


# ---- fill-in-the-middle --------------------------------------------------------------------


def test_fim_tokens_are_found_by_name_only_when_they_are_control_tokens():
    found = find_fim(FimBackend())
    assert found is not None and (found.prefix, found.suffix, found.middle) == (258, 259, 260)
    assert found.names == FIM_NAMES[0]
    assert find_fim(FakeBackend()) is None  # the names are plain text there: many byte tokens
    backend = FimBackend()
    assert fim_tokens(backend) is fim_tokens(backend)  # looked up once per backend


def test_suffix_builds_the_psm_prompt_with_text_tokenized_plainly():
    model = model_on(FimBackend())
    ready = prepare(model, RawPrompt("prompt", text="def f(<fim_suffix>"), max_tokens=4, suffix="):\n")
    pre, suf, mid = FIM.values()
    # the prefix's control-token text stays text (llama.cpp's infill tokenizes it so)
    assert ready.tokens == (pre, *b"def f(<fim_suffix>", suf, *b"):\n", mid)
    assert ready.echo == "def f(<fim_suffix>"


def test_suffix_with_token_ids_and_with_bos():
    pre, suf, mid = FIM.values()
    ready = prepare(model_on(FimBackend()), RawPrompt("prompt", tokens=(100, 101)), max_tokens=1, suffix="z")
    assert ready.tokens == (pre, 100, 101, suf, ord("z"), mid)
    with_bos = prepare(model_on(FimBackend(), add_bos=True), RawPrompt("prompt", text="a"), max_tokens=1, suffix="z")
    assert with_bos.tokens == (IM_START, pre, ord("a"), suf, ord("z"), mid)


def test_an_empty_suffix_is_a_plain_completion_on_any_model():
    assert prepare(model_on(), RawPrompt("prompt", text="ab"), max_tokens=1, suffix="").tokens == tuple(b"ab")


def test_suffix_on_a_model_without_fim_tokens_is_a_400_naming_it():
    with pytest.raises(InvalidRequest) as caught:
        prepare(model_on(), RawPrompt("prompt", text="ab"), max_tokens=1, suffix="cd")
    assert caught.value.param == "suffix"
    assert caught.value.message == no_fim_message("fake") and "<fim_prefix>" in caught.value.message


def test_a_fim_prompt_over_the_context_is_context_length_exceeded():
    model = model_on(FimBackend(n_ctx=32))
    with pytest.raises(ContextLengthExceeded) as caught:
        prepare(model, RawPrompt("prompt", text="a" * 10), max_tokens=1, suffix="b" * 30)
    assert caught.value.param == "prompt" and "suffix" in caught.value.message
    with pytest.raises(ContextLengthExceeded) as caught:
        prepare(model, RawPrompt("prompt", text="a" * 10), max_tokens=30, suffix="b")
    assert caught.value.param == "max_tokens"


def test_the_fim_backend_is_the_fake_plus_three_tokens():
    backend = FimBackend()
    assert backend.info.n_vocab == 261 and dataclasses.replace(backend.info, n_vocab=258) == FakeBackend().info
