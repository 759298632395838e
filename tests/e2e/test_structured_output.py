"""response_format on the real model, through the official openai client: outputs always parse
and validate, for fixed schemas and for generated ones."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings

from tests.e2e.schemas import object_schemas
from tests.e2e.support import MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

ASK = [{"role": "user", "content": "Describe a city you like, as JSON."}]

CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0, "maximum": 50000000},
        "coastal": {"type": "boolean"},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "climate": {"enum": ["hot", "mild", "cold"]},
        "location": {"type": "object", "properties": {"lat": {"type": "integer", "minimum": -90, "maximum": 90},
                                                      "lon": {"type": "integer", "minimum": -180, "maximum": 180}},
                     "required": ["lat", "lon"], "additionalProperties": False},
    },
    "required": ["name", "country", "population", "coastal", "landmarks", "climate", "location"],
    "additionalProperties": False,
}


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_json_schema_output_validates(client: openai.OpenAI, temperature: float) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=400, temperature=temperature,
                                       seed=3, response_format=json_schema_format(CITY))
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), CITY)


def test_json_object_streaming(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Reply with a JSON object with keys name and age for a person called Ann, 30."}]
    stream = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=200, temperature=0,
                                            response_format={"type": "json_object"}, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict)


def test_an_unusable_schema_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8,
                                       response_format=json_schema_format({"type": "no-such-type"}))
    assert e.value.param == "response_format.json_schema.schema"


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(schema=object_schemas)
def test_generated_schemas_always_validate(client: openai.OpenAI, schema: dict[str, Any]) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=500, temperature=0.7, seed=1,
                                       response_format=json_schema_format(schema))
    choice = r.choices[0]
    assert choice.finish_reason == "stop"  # bounded schemas: the grammar ends the output
    jsonschema.validate(json.loads(choice.message.content), schema)
