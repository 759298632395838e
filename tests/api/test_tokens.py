"""POST /tokenize and /detokenize on the fake model (one token per byte, ChatML control tokens)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat, chatml_prompt_tokens


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


# ---- the peers' shapes: llama.cpp's llama-server and vLLM ------------------------------------


async def test_llama_server_shape_gets_llama_servers_answer(client):
    """`add_special`/`parse_special`/`with_pieces` mark llama-server's request: control-token text
    is parsed by default, and the answer is `{"tokens": [...]}`."""
    r = await client.post("/tokenize", json={"content": "h<|im_end|>", "add_special": False})
    assert r.status_code == 200, r.text
    assert r.json() == {"tokens": [104, 257]}
    plain = (await client.post("/tokenize", json={"content": "h<|im_end|>", "parse_special": False})).json()
    assert plain == {"tokens": list(b"h<|im_end|>")}


async def test_llama_server_pieces_are_text_or_bytes(client):
    r = await client.post("/tokenize", json={"content": "hé<|im_end|>", "with_pieces": True})
    assert r.json() == {"tokens": [{"id": 104, "piece": "h"}, {"id": 0xC3, "piece": [0xC3]},
                                   {"id": 0xA9, "piece": [0xA9]}, {"id": 257, "piece": "<|im_end|>"}]}


async def test_vllm_text_shape_gets_vllms_answer(client):
    r = await client.post("/tokenize", json={"model": MODEL, "prompt": "hé", "return_token_strs": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 3, "max_model_len": 2048, "tokens": list("hé".encode()),
                        "token_strs": ["h", "\ufffd", "\ufffd"]}
    assert (await client.post("/tokenize", json={"prompt": "h"})).json()["token_strs"] is None


async def test_vllm_chat_shape_renders_the_template_as_asked(client):
    messages = [{"role": "user", "content": "count me"}]
    full = (await client.post("/tokenize", json={"model": MODEL, "messages": messages,
                                                 "add_generation_prompt": True})).json()
    assert set(full) == {"count", "max_model_len", "tokens", "token_strs"}
    assert full["count"] == chatml_prompt_tokens(messages)
    bare = (await client.post("/tokenize", json={"messages": messages, "add_generation_prompt": False})).json()
    assert full["tokens"] == bare["tokens"] + [256, *b"assistant\n"]
    cont = (await client.post("/tokenize", json={
        "messages": [*messages, {"role": "assistant", "content": "Sure: one"}], "add_generation_prompt": False,
        "continue_final_message": True})).json()
    assert bytes(t for t in cont["tokens"][-9:]) == b"Sure: one"  # no end of turn after it


@pytest.mark.parametrize("fields, param", [
    ({"chat_template": "{{ messages }}"}, "chat_template"),
    ({"chat_template_kwargs": {"tools_in_user": True}}, "chat_template_kwargs.tools_in_user"),
    ({"mm_processor_kwargs": {"fps": 1}}, "mm_processor_kwargs"),
    ({"continue_final_message": True}, "continue_final_message"),  # with add_generation_prompt's default
    ({"add_special_tokens": "yes"}, "add_special_tokens"),
])
async def test_what_vllms_chat_shape_asks_that_rill_cannot_do_is_a_400(client, fields, param):
    r = await client.post("/tokenize", json={"messages": [{"role": "user", "content": "x"}], **fields})
    assert_error(r, 400, param=param)


async def test_detokenize_answers_in_every_shape(client):
    body = (await client.post("/detokenize", json={"model": MODEL, "tokens": list(b"hi")})).json()
    assert body["content"] == body["prompt"] == "hi"  # Rill's and llama-server's name; vLLM's
