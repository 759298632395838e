"""A thinking model (the fake with a template that has a thinking section): its reasoning goes to
`reasoning_content`, never to `content`, streamed and not, counted in `reasoning_tokens`; the
model card says it reasons."""

from __future__ import annotations

import pytest

from rill.sampling.template import CHATML
from tests.api.conftest import CHAT_URL, MODEL, chat, chunks_of, parse_sse, stream_text

# Qwen3's shape: the model opens the section itself; enable_thinking=false would close it empty
THINKS = CHATML.replace(
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}")
# DeepSeek-R1's shape: the generation prompt opens the section
OPENS = CHATML.replace("'<|im_start|>assistant\n' }}{% endif %}", "'<|im_start|>assistant\n<think>\n' }}{% endif %}")
assert THINKS != CHATML and OPENS != CHATML

THOUGHT = "<think>\nThe user wants a colour. Blue is safe.\n</think>\n\n"
ANSWER = "Blue."

thinking = pytest.mark.parametrize("backend", [{"chat_template": THINKS}], indirect=True)


@thinking
async def test_the_reasoning_is_split_off_and_counted(client):
    body = (await client.post(CHAT_URL, json=chat(THOUGHT + ANSWER, temperature=0))).json()
    message = body["choices"][0]["message"]
    assert message["content"] == ANSWER
    assert message["reasoning_content"] == "\nThe user wants a colour. Blue is safe.\n"
    usage = body["usage"]
    # the fake's tokens are bytes: the section up to its closing marker, markers included
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(THOUGHT.rstrip("\n"))
    assert usage["completion_tokens"] == len(THOUGHT + ANSWER)


@thinking
async def test_a_stream_sends_the_reasoning_as_reasoning_content_deltas(client):
    r = await client.post(CHAT_URL, json=chat(THOUGHT + ANSWER, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    events = parse_sse(r.text)
    deltas = [c["choices"][0]["delta"] for c in chunks_of(events) if c.get("choices")]
    assert stream_text(events) == ANSWER
    assert all("<think>" not in (d.get("content") or "") and "</think>" not in (d.get("content") or "")
               for d in deltas)
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "\nThe user wants a colour. Blue is safe.\n"
    # reasoning first, then the answer
    kinds = [k for d in deltas for k in ("reasoning_content", "content") if d.get(k)]
    assert kinds == sorted(kinds, key=lambda k: k == "content")
    assert chunks_of(events)[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


@pytest.mark.parametrize("backend", [{"chat_template": OPENS}], indirect=True)
async def test_a_prompt_that_opens_the_section_has_the_model_start_inside_it(client):
    # the fake echoes the message after what the prompt already holds ("<think>\n")
    body = (await client.post(CHAT_URL, json=chat("<think>\nshort plan</think>Yes.", temperature=0))).json()
    message = body["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("short plan", "Yes.")


@thinking
async def test_an_answer_without_a_section_is_all_content(client):
    body = (await client.post(CHAT_URL, json=chat("Just the answer.", temperature=0))).json()
    message = body["choices"][0]["message"]
    assert message["content"] == "Just the answer." and "reasoning_content" not in message
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


@thinking
async def test_the_model_card_says_it_reasons(client):
    card = (await client.get(f"/v1/models/{MODEL}")).json()
    assert card["capabilities"]["reasoning"] is True


async def test_a_model_without_a_thinking_section_does_not_reason(client):
    card = (await client.get(f"/v1/models/{MODEL}")).json()
    assert card["capabilities"]["reasoning"] is False
