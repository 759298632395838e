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


LONG_THOUGHT = "<think>\n" + "I weigh every colour in turn, slowly. " * 20 + "\n</think>\n\n"


@thinking
async def test_a_spent_budget_closes_the_section_and_the_model_answers(client):
    """`low` allows 512 reasoning tokens: the fake's 770-byte thought is cut there, Rill writes
    the closing marker itself, and what the model writes next is content."""
    body = (await client.post(CHAT_URL, json=chat(LONG_THOUGHT + ANSWER, temperature=0,
                                                  reasoning_effort="low"))).json()
    message = body["choices"][0]["message"]
    details = body["usage"]["completion_tokens_details"]
    # the budget, then the forced closing marker: "\n</think>" (the "\n\n" after it is dropped)
    assert details["reasoning_tokens"] == 512 + len("\n</think>")
    assert message["reasoning_content"] == LONG_THOUGHT[len("<think>"):512] + "\n"
    assert "<think>" not in message["content"] and message["content"]
    unlimited = (await client.post(CHAT_URL, json=chat(LONG_THOUGHT + ANSWER, temperature=0))).json()
    assert unlimited["choices"][0]["message"]["content"] == ANSWER
    assert unlimited["usage"]["completion_tokens_details"]["reasoning_tokens"] == len(LONG_THOUGHT.rstrip("\n"))


@thinking
@pytest.mark.parametrize("effort", ["none", "minimal"])
async def test_no_effort_renders_the_prompt_with_thinking_switched_off(client, effort):
    # enable_thinking=false puts an empty section in the prompt: the fake, echoing after it,
    # shows the prompt grew by exactly that section
    on = (await client.post(CHAT_URL, json=chat("Hi.", temperature=0))).json()["usage"]
    off = (await client.post(CHAT_URL, json=chat("Hi.", temperature=0, reasoning_effort=effort))).json()["usage"]
    assert off["prompt_tokens"] == on["prompt_tokens"] + len("<think>\n\n</think>\n\n")


@pytest.mark.parametrize("backend", [{"chat_template": OPENS}], indirect=True)
async def test_no_effort_without_a_switch_closes_the_section_at_once(client):
    body = (await client.post(CHAT_URL, json=chat("<think>\nplan</think>Yes.", temperature=0,
                                                  reasoning_effort="none"))).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "\n"  # nothing but the forced marker's newline
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == len("\n</think>")
