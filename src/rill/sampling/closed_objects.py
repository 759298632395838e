"""JSON schemas as generation reads them: an object schema that lists its `properties` and says
nothing of `additionalProperties` allows no other keys.

JSON Schema's own default is that any other key may follow, and a small model given that freedom
fills it: SmolLM2 asked for `{"city": ...}` under LangChain's schema (no additionalProperties)
wrote extra keys until max_tokens, so the call ended with `length` and arguments that did not
parse. llama.cpp's schema converter and vLLM's default grammar engine (xgrammar, strict mode)
read a missing `additionalProperties` as false for the same reason; so does Rill. A schema that
says `"additionalProperties": true` (or gives a schema for them, or uses `patternProperties`
or `unevaluatedProperties`) still gets the extra keys it asks for, and an object schema without
`properties` (`{"type": "object"}`, json_object mode) still allows any object.

A schema that combines its own `properties` with `allOf`, `anyOf`, `oneOf` or `$ref` (both must
hold), and the members of an `allOf`, are left open: each part lists only its own properties, so
closing each would make their intersection refuse the others' keys.
"""

from __future__ import annotations

from typing import Any

# Keywords whose value is one subschema, or a list or a map of them.
_ONE = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
        "unevaluatedItems", "additionalProperties", "unevaluatedProperties")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Any of these on an object schema says what other keys may do: the client decided.
_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")
# Siblings that the schema's own properties are intersected with.
_COMBINED = ("allOf", "anyOf", "oneOf", "$ref")


def closed(schema: Any) -> Any:
    """A copy of `schema` in which every object schema with `properties` and no word on other
    keys allows none (the input is not changed)."""
    return _close(schema, is_part=False)


def _close(schema: Any, *, is_part: bool) -> Any:
    """is_part: the schema is one part of an intersection (see the module's docstring)."""
    if not isinstance(schema, dict):
        return schema  # true/false schemas, or something llguidance will refuse by itself
    out = dict(schema)
    combined = isinstance(out.get("properties"), dict) and any(k in out for k in _COMBINED)
    for key in _ONE:
        if key in out:
            out[key] = _close(out[key], is_part=False)
    for key in _MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: _close(s, is_part=False) for name, s in out[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        members = out.get(key)
        if isinstance(members, list):
            part = combined or (key == "allOf" and len(members) > 1)
            out[key] = [_close(s, is_part=part and key != "prefixItems") for s in members]
    if (not is_part and not combined and isinstance(out.get("properties"), dict)
            and not any(k in out for k in _OPEN_KEYS)):
        out["additionalProperties"] = False
    return out
