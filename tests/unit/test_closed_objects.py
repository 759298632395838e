"""rill.sampling.closed_objects: object schemas that list their properties and say nothing of
other keys allow none in generation; what a schema says itself is kept. Checked on the schema and
on the grammar llguidance builds from it (the fake vocabulary: one token per byte)."""

from __future__ import annotations

import copy

import pytest

from rill.backends.fake import FakeBackend
from rill.sampling.closed_objects import closed
from rill.sampling.grammar import Grammars

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_properties_without_a_word_on_other_keys_allow_none():
    assert closed(CITY) == {**CITY, "additionalProperties": False}


@pytest.mark.parametrize("said", [{"additionalProperties": True}, {"additionalProperties": {"type": "integer"}},
                                  {"patternProperties": {"^x_": {}}}, {"unevaluatedProperties": True}])
def test_a_schema_that_says_what_other_keys_may_do_is_kept(said):
    assert closed({**CITY, **said}) == {**CITY, **said}


def test_an_object_without_properties_allows_any_keys():
    assert closed({"type": "object"}) == {"type": "object"}  # json_object mode


def test_nested_objects_are_closed_wherever_they_are():
    schema = {"type": "object", "properties": {
        "home": CITY, "trips": {"type": "array", "items": CITY},
        "either": {"anyOf": [CITY, {"type": "null"}]}, "ref": {"$ref": "#/$defs/c"}},
        "$defs": {"c": CITY}}
    out = closed(schema)
    shut = {**CITY, "additionalProperties": False}
    assert out["properties"]["home"] == shut and out["properties"]["trips"]["items"] == shut
    assert out["properties"]["either"]["anyOf"][0] == shut and out["$defs"]["c"] == shut
    assert out["additionalProperties"] is False


def test_parts_of_an_intersection_stay_open():
    """allOf members, and properties beside allOf/anyOf/oneOf/$ref, list only their own keys."""
    two = {"allOf": [CITY, {"type": "object", "properties": {"zip": {"type": "string"}}}]}
    assert closed(two) == two
    beside = {**CITY, "anyOf": [{"properties": {"zip": {"type": "string"}}}]}
    assert closed(beside) == beside
    one = {"allOf": [CITY]}  # a lone member (pydantic's $ref wrapper) is the schema itself
    assert closed(one) == {"allOf": [{**CITY, "additionalProperties": False}]}


def test_the_schema_given_is_not_changed():
    schema = {"type": "object", "properties": {"home": CITY}}
    before = copy.deepcopy(schema)
    closed(schema)
    assert schema == before


def accepts(grammars: Grammars, schema: dict, text: str) -> bool:
    constraint = grammars.json_schema(schema).constraint()
    for byte in text.encode():
        constraint.advance(byte)
        if constraint.error:
            return False
    return constraint.done or constraint._matcher.is_accepting()


def test_the_grammar_refuses_extra_keys_unless_the_schema_allows_them():
    grammars = Grammars(FakeBackend().guidance_tokenizer(), 258)
    assert accepts(grammars, CITY, '{"city":"Paris"}')
    assert not accepts(grammars, CITY, '{"city":"Paris","population":2}')
    assert accepts(grammars, {**CITY, "additionalProperties": True}, '{"city":"Paris","population":2}')
