"""Legacy completions: the wire request -> Options and one GenerationRequest per prompt; the
fields that contradict each other or ask for what Rill cannot do are 400s naming the field."""

from __future__ import annotations

import pytest

from rill.api.http.body import validated
from rill.api.protocols.completions.limits import check_choices, window
from rill.api.protocols.completions.mapping import DEFAULT_MAX_TOKENS, generation_request, options
from rill.api.protocols.completions.prompts import ReadyPrompt
from rill.api.protocols.completions.schemas import CompletionRequest
from rill.errors import InvalidRequest
from tests.unit.completions_support import body, model_on

PROMPT = ReadyPrompt("prompt[1]", (1, 2, 3), "abc")


def test_defaults_follow_openai():
    opts = options(body())
    assert (opts.n, opts.best_of, opts.logprobs, opts.echo, opts.stream, opts.include_usage) == \
        (1, 1, None, False, False, False)
    assert opts.max_tokens == DEFAULT_MAX_TOKENS == 16
    gen = generation_request(body(), opts, PROMPT)
    assert gen.prompt_tokens == (1, 2, 3) and gen.messages == () and gen.prompt_text is None
    assert (gen.temperature, gen.top_p, gen.n, gen.max_tokens, gen.top_logprobs, gen.stop) == (None, 1.0, 1, 16, None, ())  # None: the model default
    assert gen.messages_where == "prompt[1]" and gen.max_tokens_where == "max_tokens"


def test_an_explicit_null_max_tokens_is_the_default_too():
    assert options(body(max_tokens=None)).max_tokens == 16


def test_every_sampling_field_reaches_the_generation_request():
    req = body(model="m", max_tokens=5, temperature=0.0, top_p=0.5, seed=7, frequency_penalty=0.5,
               presence_penalty=-1.0, logit_bias={"65": -100}, stop="\n", n=2, logprobs=3, stream=True,
               stream_options={"include_usage": True})
    opts = options(req)
    gen = generation_request(req, opts, PROMPT)
    assert (gen.model, gen.max_tokens, gen.temperature, gen.top_p, gen.seed) == ("m", 5, 0.0, 0.5, 7)
    assert (gen.frequency_penalty, gen.presence_penalty, gen.logit_bias) == (0.5, -1.0, {"65": -100.0})
    assert gen.stop == ("\n",) and gen.n == 2 and gen.top_logprobs == 3 and gen.stream
    assert opts.include_usage and opts.stream
    assert generation_request(body(stop=["a", "b"]), options(body()), PROMPT).stop == ("a", "b")


def test_best_of_generates_best_of_choices_with_logprobs_to_rank_them():
    req = body(n=2, best_of=5)
    opts = options(req)
    assert opts.ranks and (opts.n, opts.best_of) == (2, 5)
    gen = generation_request(req, opts, PROMPT)
    assert gen.n == 5
    assert gen.top_logprobs == 0  # logprobs of the sampled tokens only, to rank; none are shown
    assert opts.logprobs is None
    # best_of == n ranks nothing, and needs no logprobs
    same = options(body(n=3, best_of=3))
    assert not same.ranks and generation_request(body(n=3, best_of=3), same, PROMPT).top_logprobs is None
    # the client's logprobs are asked for as they are
    assert generation_request(body(best_of=3, logprobs=2), options(body(best_of=3, logprobs=2)), PROMPT).top_logprobs == 2


@pytest.mark.parametrize("fields, param, words", [
    ({"n": 3, "best_of": 2}, "best_of", "at least `n`"),
    ({"best_of": 2, "stream": True}, "best_of", "cannot be streamed"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
])
def test_contradictions_and_what_rill_cannot_do_are_400s(fields, param, words):
    with pytest.raises(InvalidRequest) as caught:
        options(body(**fields))
    assert caught.value.param == param and words in caught.value.message


def test_best_of_equal_to_n_may_stream_and_echo_may_stream():
    assert options(body(n=2, best_of=2, stream=True)).stream
    assert options(body(echo=True, stream=True)).echo


@pytest.mark.parametrize("fields, param", [
    ({"logprobs": 6}, "logprobs"), ({"logprobs": -1}, "logprobs"), ({"n": 0}, "n"), ({"best_of": 0}, "best_of"),
    ({"max_tokens": -1}, "max_tokens"), ({"temperature": 2.5}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": ""}, "stop"), ({"echo": "yes"}, "echo"),
    ({"prompt": [1, "a"]}, "prompt"), ({"prompt": [[1], "a"]}, "prompt"), ({"prompt": 5}, "prompt"),
    ({"prompt": [1.5]}, "prompt"), ({"prompt": [True]}, "prompt"), ({"suffix": 3}, "suffix"),
    ({"logit_bias": {"1": 101}}, "logit_bias.1"),
])
def test_the_schema_refuses_wrong_values_naming_the_field(fields, param):
    data = {"prompt": "hi", **fields}
    with pytest.raises(InvalidRequest) as caught:
        validated(data, CompletionRequest)
    assert caught.value.param == param


def test_a_missing_prompt_is_a_400():
    with pytest.raises(InvalidRequest) as caught:
        validated({"model": "m"}, CompletionRequest)
    assert caught.value.param == "prompt"


@pytest.mark.parametrize("prompt", ["text", ["a", "b"], [1, 2], [[1], [2, 3]]])
def test_every_prompt_shape_validates(prompt):
    assert validated({"prompt": prompt}, CompletionRequest).prompt == prompt


def test_unknown_fields_are_accepted():
    assert validated({"prompt": "x", "top_k": 5, "min_p": 0.1}, CompletionRequest).model_extra == {"top_k": 5, "min_p": 0.1}


def test_a_prompts_choices_must_fit_the_batch():
    model = model_on()  # the fake engine: --parallel 1 by default
    assert model.engine.max_sequences == 1
    check_choices(options(body()), model, max_n=16)
    with pytest.raises(InvalidRequest) as caught:
        check_choices(options(body(n=2)), model, max_n=16)
    assert caught.value.param == "n" and "at most 1" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        check_choices(options(body(best_of=2)), model, max_n=16)
    assert caught.value.param == "best_of"


def test_prompts_run_as_many_at_a_time_as_their_choices_fit_the_batch():
    from rill.backends.fake import FakeBackend
    from rill.engine.engine import Engine
    from rill.router import LocalModel
    from rill.sampling.template import ChatTemplate

    backend = FakeBackend(max_sequences=8)
    model = LocalModel(id="f", engine=Engine(backend, max_running=8), template=ChatTemplate(backend.info.chat_template))
    assert window(options(body()), model, max_n=16) == 8
    assert window(options(body(n=3)), model, max_n=16) == 2
    assert window(options(body(n=2, best_of=8)), model, max_n=16) == 1
    assert window(options(body()), model, max_n=4) == 4  # the server's max n bounds it too
    with pytest.raises(InvalidRequest):
        check_choices(options(body(n=2, best_of=9)), model, max_n=16)


def test_echo_with_logprobs_scores_the_prompt_and_max_tokens_0_generates_nothing():
    opts = options(body(echo=True, logprobs=2, max_tokens=0))
    assert opts.scores_prompt and opts.max_tokens == 0
    gen = generation_request(body(echo=True, logprobs=2, max_tokens=0), opts, PROMPT)
    assert (gen.prompt_logprobs, gen.top_logprobs, gen.max_tokens) == (2, 2, 0)
    plain = options(body(logprobs=2))
    assert not plain.scores_prompt and generation_request(body(logprobs=2), plain, PROMPT).prompt_logprobs is None
