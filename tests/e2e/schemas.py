"""Generated JSON schemas for property tests on the real model: bounded scalars, enums, nested
objects and arrays, required and optional fields (bounds keep a small model from looping)."""

from __future__ import annotations

from hypothesis import strategies as st

_scalars = st.one_of(
    st.just({"type": "string", "maxLength": 20}),
    st.just({"type": "boolean"}),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-1000, 1000), st.integers(0, 1000)),
    st.lists(st.sampled_from(["red", "green", "blue", "amber"]), min_size=1, max_size=4, unique=True)
    .map(lambda values: {"enum": values}),
)
_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def _objects(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(_names, children, min_size=1, max_size=3).flatmap(
        lambda props: st.sets(st.sampled_from(sorted(props))).map(
            lambda required: {"type": "object", "properties": props, "required": sorted(required),
                              "additionalProperties": False}))


object_schemas = st.recursive(_scalars, lambda children: st.one_of(
    _objects(children), children.map(lambda item: {"type": "array", "items": item, "maxItems": 3})),
    max_leaves=6).filter(lambda s: s.get("type") == "object") | _objects(_scalars)
