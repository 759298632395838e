"""response_format on the fake model: its logits know nothing of JSON, so every valid output
here is the grammar's doing."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.api.conftest import CHAT_URL, PANICS, assert_error, chat, chunks_of, parse_sse, stream_text

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


@pytest.mark.parametrize("temperature", [0, 1.0])
async def test_json_object_output_is_one_json_object(client, temperature):
    r = await client.post(CHAT_URL, json=chat("not json at all", temperature=temperature, seed=1,
                                              max_tokens=200, response_format={"type": "json_object"}))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"]), dict)


@pytest.mark.parametrize("seed", range(4))
async def test_json_schema_output_validates(client, seed):
    r = await client.post(CHAT_URL, json=chat("describe someone", temperature=1.0, seed=seed, max_tokens=300,
                                              response_format=schema_format(PERSON)))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)


async def test_streamed_structured_output_validates(client):
    r = await client.post(CHAT_URL, json=chat("x", temperature=0, stream=True, max_tokens=300,
                                              response_format=schema_format(PERSON)))
    events = parse_sse(r.text)
    jsonschema.validate(json.loads(stream_text(events)), PERSON)
    assert [c for c in chunks_of(events) if c["choices"]][-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("engine_slots", [4], indirect=True)
async def test_each_of_n_choices_has_its_own_grammar_state(client):
    r = await client.post(CHAT_URL, json=chat("x", temperature=1.0, seed=5, n=3, max_tokens=300,
                                              response_format=schema_format(PERSON)))
    contents = [c["message"]["content"] for c in r.json()["choices"]]
    for content in contents:
        jsonschema.validate(json.loads(content), PERSON)


@pytest.mark.parametrize("schema", [{"type": "nonsense"}, {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
                                    PANICS])
async def test_a_schema_that_cannot_be_compiled_is_a_400_before_the_stream(client, schema):
    for stream in (False, True):
        r = await client.post(CHAT_URL, json=chat("x", stream=stream, response_format=schema_format(schema)))
        err = assert_error(r, 400, param="response_format.json_schema.schema")
        assert "JSON schema" in err["message"]


async def test_text_format_changes_nothing(client):
    r = await client.post(CHAT_URL, json=chat("plain", temperature=0, response_format={"type": "text"}))
    assert r.json()["choices"][0]["message"]["content"] == "plain"


@pytest.mark.parametrize("keyword", [{"uniqueItems": True}, {"not": {"type": "string"}}])
async def test_unimplemented_schema_keywords_are_named_in_the_400(client, keyword):
    schema = {"type": "array", "items": {"type": "integer"}, **keyword}
    r = await client.post(CHAT_URL, json=chat("x", response_format=schema_format(schema)))
    err = assert_error(r, 400, param="response_format.json_schema.schema")
    assert next(iter(keyword)) in err["message"]
