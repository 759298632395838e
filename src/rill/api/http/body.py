"""A request body read as JSON whatever its Content-Type (as `curl -d` sends it), bounded in depth,
and validated against a wire model: every problem is a 400 naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from rill.api.http.errors import invalid_body
from rill.errors import InvalidRequest

T = TypeVar("T", bound=BaseModel)


async def read_body(request: Request, schema: type[T]) -> T:
    """The JSON body validated against schema; any problem is a 400 naming the field."""
    return validated(await read_json(request), schema)


# How deeply a request body's JSON may nest. Deeper values broke what reads them later: orjson
# writes at most 254 levels (a 260-deep schema was a 500), and the store's JSON columns went
# through the stdlib's recursive encoder (a 1,000-deep extra field in a content part: a 500 with
# `store: true`). A JSON schema 30 objects deep is 64 levels of the body.
MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:  # else it cannot be that deep
        check_depth(data)
    return data


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """A 400 naming where `data` nests deeper than `limit` arrays and objects."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(data, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            where = param_path(path)
            raise InvalidRequest(f"`{where}` nests JSON more than {limit} levels deep; this server reads "
                                 f"at most {limit}.", param=where)
        # the path is kept for the first levels only: enough to name the field, cheap on big bodies
        if isinstance(value, dict):
            stack.extend((v, depth + 1, path + (k,) if depth < 8 else path) for k, v in value.items()
                         if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path + (i,) if depth < 8 else path) for i, v in enumerate(value)
                         if isinstance(v, (dict, list)))


def param_path(path: tuple[str | int, ...]) -> str:
    """("messages", 0, "content") -> "messages[0].content" """
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "body"


def validated(data: Any, schema: type[T]) -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc.errors(), data) from None
