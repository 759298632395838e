"""Inputs that used to stall or break the server: deep JSON, grammars too big to compile, and
prompts far over the context. Each is a 400 naming the field, found cheaply, and the server keeps
answering everyone else meanwhile."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rill.backends.fake import FakeBackend
from tests.api.conftest import CHAT_URL, assert_error, chat

BIG_BODIES = pytest.mark.parametrize("config", [{"max_body_bytes": 8 << 20}], indirect=True)


def nested(depth: int) -> Any:
    value: Any = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}


async def test_a_schema_nested_260_levels_is_a_400_naming_it(client):
    r = await client.post(CHAT_URL, json=chat("x", response_format=schema_format(nested(130))))
    err = assert_error(r, 400)
    assert err["param"].startswith("response_format.json_schema.schema.properties") and "64 levels" in err["message"]


@pytest.mark.parametrize("store", [False, True])
async def test_deep_json_in_an_extra_field_is_a_400_with_or_without_store(client, store):
    part = {"type": "text", "text": "hi", "vendor_extra": "DEEP"}
    body = json.dumps(chat("x", messages=[{"role": "user", "content": [part]}], store=store))
    body = body.replace('"DEEP"', "[" * 1000 + "1" + "]" * 1000)  # json.dumps itself stops at ~1,000 levels
    r = await client.post(CHAT_URL, content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 400)
    assert err["param"].startswith("messages[0].content[0].vendor_extra")


async def test_json_as_deep_as_the_limit_is_served(client):
    r = await client.post(CHAT_URL, json=chat("x", max_tokens=2, response_format=schema_format(nested(29))))
    assert r.status_code == 200, r.text


# A 20,000-object enum: past the grammar's size budget (llguidance ran 3.7 s into a Rust assertion).
HUGE_ENUM = {"type": "object", "properties": {"x": {"enum": [{"a": i, "b": f"v{i}"} for i in range(20_000)]}},
             "required": ["x"]}


@BIG_BODIES
@pytest.mark.parametrize("backend", [{"n_ctx": 1_000_000}], indirect=True)  # the tool's schema is in the prompt
async def test_a_grammar_over_the_size_budget_is_a_400_naming_the_field(client):
    r = await client.post(CHAT_URL, json=chat("x", response_format=schema_format(HUGE_ENUM)))
    err = assert_error(r, 400, param="response_format.json_schema.schema")
    assert "too big" in err["message"] and "backtrace" not in err["message"]
    tools = [{"type": "function", "function": {"name": "pick", "parameters": HUGE_ENUM}}]
    r = await client.post(CHAT_URL, json=chat("x", tools=tools, tool_choice="required"))
    assert_error(r, 400, param="tools[0].function.parameters")


@BIG_BODIES
async def test_other_requests_are_answered_while_a_big_grammar_compiles(client):
    """The compile runs on a planning thread without the GIL: /health (and any other request)
    answers while it goes on. It was compiled again on the event loop at submission, which froze
    every request for as long."""
    compiling = asyncio.ensure_future(client.post(CHAT_URL, json=chat("x", response_format=schema_format(HUGE_ENUM))))
    await asyncio.sleep(0)  # the chat request is on its way
    health = await client.get("/health")
    assert health.status_code == 200
    assert not compiling.done(), "the compile ended before /health could be asked"
    assert_error(await compiling, 400)


class CountingBackend(FakeBackend):
    """The fake, counting the bytes it is asked to tokenize."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.tokenized = 0

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        self.tokenized += len(text.encode())
        return super().tokenize(text, add_bos=add_bos, parse_special=parse_special)


counting = pytest.mark.parametrize("backend", [{"cls": CountingBackend}], indirect=True)


@BIG_BODIES
@counting
async def test_a_prompt_far_over_the_context_is_refused_untokenized(client, backend):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(100_000)]
    before = backend.tokenized
    r = await client.post(CHAT_URL, json={"messages": messages})
    err = assert_error(r, 400, code="context_length_exceeded", param="messages")
    assert "at least" in err["message"]
    assert backend.tokenized == before  # its length alone said it cannot fit


@BIG_BODIES
@counting
async def test_tokenizing_stops_at_the_group_that_passes_the_context(client, backend):
    # 20 KB of prompt, a token a byte (the fake): ten times the 2,048-token context, yet short
    # enough that its length alone cannot tell (the longest token, <|im_start|>, is 12 bytes)
    messages = [{"role": "user", "content": "y" * 2000} for _ in range(10)]
    before = backend.tokenized
    r = await client.post(CHAT_URL, json={"messages": messages})
    assert_error(r, 400, code="context_length_exceeded")
    assert backend.tokenized - before < 10_000  # the first group (4 KB and a message) passed it
