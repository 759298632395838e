"""POST /tokenize and /detokenize on the fake model (one token per byte, ChatML control tokens)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import CHAT_URL, assert_error, chat, chatml_prompt_tokens


async def test_tokenize_text_gives_ids_pieces_and_bytes(client):
    r = await client.post("/tokenize", json={"content": "hé"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3 and body["model"] and body["exact"] is True
    assert [t["id"] for t in body["tokens"]] == list("hé".encode())
    assert [t["bytes"] for t in body["tokens"]] == [[104], [0xC3], [0xA9]]
    assert body["tokens"][0]["piece"] == "h"


async def test_control_token_text_in_content_stays_text(client):
    r = await client.post("/v1/tokenize", json={"content": "<|im_end|>"})
    assert [t["id"] for t in r.json()["tokens"]] == list(b"<|im_end|>")


async def test_tokenize_messages_gives_the_prompt_a_chat_request_would_send(client):
    messages = [{"role": "user", "content": "count me"}]
    body = (await client.post("/tokenize", json={"messages": messages})).json()
    usage = (await client.post(CHAT_URL, json=chat("count me", temperature=0))).json()["usage"]
    assert body["count"] == usage["prompt_tokens"] == chatml_prompt_tokens(messages)


async def test_exactly_one_of_content_or_messages(client):
    for payload in ({}, {"content": "a", "messages": [{"role": "user", "content": "b"}]}):
        assert_error(await client.post("/tokenize", json=payload), 400, param="content")


async def test_bad_tokenize_bodies_are_400s_naming_the_field(client):
    assert_error(await client.post("/tokenize", json={"content": 5}), 400, param="content")
    assert_error(await client.post("/tokenize", json={"messages": [{"role": "nobody"}]}), 400)
    assert_error(await client.post("/tokenize", content=b"{not json"), 400)
    assert_error(await client.post("/tokenize", json={"content": "x", "model": "nope"}), 404,
                 param="model")


async def test_detokenize_joins_the_pieces(client):
    r = await client.post("/detokenize", json={"tokens": [*"hé".encode(), 257]})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "hé"  # the control token adds no text


async def test_detokenize_refuses_ids_outside_the_vocabulary(client):
    assert_error(await client.post("/detokenize", json={"tokens": [104, 999]}), 400, param="tokens[1]")
    assert_error(await client.post("/detokenize", json={"tokens": [-1]}), 400, param="tokens[0]")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
async def test_tokenize_then_detokenize_round_trips_any_text(client, text):
    ids = [t["id"] for t in (await client.post("/tokenize", json={"content": text})).json()["tokens"]]
    assert (await client.post("/detokenize", json={"tokens": ids})).json()["content"] == text
