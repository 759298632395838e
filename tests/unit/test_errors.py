"""rill.api.http.errors (validation errors -> param and message) and rill.errors.error_body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from rill.api.http.errors import param_from_loc, validation_error
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.errors import (
    AuthenticationError, ConfigError, ContextLengthExceeded, EngineError, InvalidRequest, ModelNotFound,
    NotReady, PayloadTooLarge, RateLimited, RillError, UnsupportedParameter, error_body,
)

USER = {"role": "user", "content": "hi"}


def body_error(body: Any) -> RequestValidationError:
    """What FastAPI raises for this body: pydantic's errors with `body` in front of each loc."""
    try:
        ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        return RequestValidationError(errors, body=body)
    raise AssertionError("the body validated")


# ---- param_from_loc ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "body", "param"),
    [
        (("body", "temperature"), {"temperature": 3}, "temperature"),
        (("temperature",), {"temperature": 3}, "temperature"),  # without FastAPI's "body"
        # discriminator tag ("tool") dropped, final missing key kept
        (("body", "messages", 0, "tool", "tool_call_id"), {"messages": [{"role": "tool"}]}, "messages[0].tool_call_id"),
        (("body", "messages", 1, "user", "content"), {"messages": [USER, {"role": "user"}]}, "messages[1].content"),
        # union member names dropped, list indices as [i]
        (("body", "stop", "list[constrained-str]", 1), {"stop": ["a", ""]}, "stop[1]"),
        (("body", "stop", "constrained-str"), {"stop": ["a", ""]}, "stop"),
        (("body", "tool_choice", "NamedToolChoice", "function"), {"tool_choice": {"type": "function"}},
         "tool_choice.function"),
        (("body", "response_format", "json_schema", "json_schema", "name"),
         {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}, "response_format.json_schema.name"),
        (("body", "messages", 0, "user", "content", "list[ContentPart]", 2, "type"),
         {"messages": [{"role": "user", "content": [{"type": "text"}, {"type": "text"}, {}]}]},
         "messages[0].content[2].type"),
        (("body", "metadata", "k"), {"metadata": {"k": "v" * 600}}, "metadata.k"),
        (("body", "messages", 7), {"messages": [USER]}, "messages"),  # an index not in the body
        (("body", "missing_field"), {}, "missing_field"),
        (("body",), {}, None),
        ((), {}, None),
    ],
)
def test_param_from_loc(loc, body, param):
    assert param_from_loc(loc, body) == param


@pytest.mark.parametrize(
    ("loc", "body", "param"),
    [
        (("body", "stop", "constrained-str"), {"stop": {"a": 1}}, "stop"),
        (("body", "messages", 0, "user", "content", "str"),
         {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]}, "messages[0].content"),
        (("body", "tool_choice", "literal['none','auto','required']"), {"tool_choice": {"type": "function"}},
         "tool_choice"),
    ],
)
def test_param_from_loc_drops_a_union_member_name_even_when_the_value_is_an_object(loc, body, param):
    assert param_from_loc(loc, body) == param


# ---- validation_error ----------------------------------------------------------------------------


def test_validation_error_names_the_field_and_keeps_pydantics_message():
    err = validation_error(body_error({"messages": [USER], "temperature": 3}))
    assert isinstance(err, InvalidRequest) and err.status == 400
    assert err.param == "temperature"
    assert err.message == "`temperature`: Input should be less than or equal to 2"


def test_missing_required_field_of_a_role():
    err = validation_error(body_error({"messages": [{"role": "tool", "content": "x"}]}))
    assert err.param == "messages[0].tool_call_id"
    assert err.message == "`messages[0].tool_call_id`: Field required"


def test_union_prefers_a_members_real_complaint_over_wrong_type():
    err = validation_error(body_error({"messages": [USER], "stop": ["a", "b", "c", "d", "e"]}))
    assert err.param == "stop"
    assert "at most 4 items" in err.message and "valid string" not in err.message


def test_union_lists_every_member_when_each_has_the_wrong_type():
    err = validation_error(body_error({"messages": [USER], "stop": 5}))
    assert err.param == "stop"
    assert err.message == "`stop`: Input should be a valid string or Input should be a valid list"


def test_union_reports_the_list_items_complaint():
    err = validation_error(body_error({"messages": [USER], "stop": ["a", ""]}))
    assert "at least 1 character" in err.message
    assert err.param == "stop[1]"


def test_invalid_json_body():
    exc = RequestValidationError([{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error",
                                   "input": {}, "ctx": {"error": "Expecting value"}}], body="{")
    err = validation_error(exc)
    assert err.message == "The request body is not valid JSON: Expecting value"
    assert err.param is None


def test_invalid_json_without_detail_has_no_dangling_colon():
    exc = RequestValidationError([{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error"}], body="")
    assert validation_error(exc).message == "The request body is not valid JSON"


def test_missing_body():
    exc = RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}], body=None)
    assert validation_error(exc).message == "The request body is empty; send a JSON object."


@pytest.mark.parametrize("body", [[USER], "text", 3])
def test_non_object_body(body):
    err = validation_error(body_error(body))
    assert err.message == "The request body must be a JSON object."
    assert err.status == 400 and err.param is None


# ---- error_body ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"),
    [
        (RillError("m"), 500, "server_error", None),
        (InvalidRequest("m", param="temperature"), 400, "invalid_request_error", None),
        (UnsupportedParameter("m", param="n"), 400, "invalid_request_error", "unsupported_parameter"),
        (ContextLengthExceeded("m", param="messages"), 400, "invalid_request_error", "context_length_exceeded"),
        (AuthenticationError("m"), 401, "authentication_error", "invalid_api_key"),
        (ModelNotFound("m", param="model"), 404, "invalid_request_error", "model_not_found"),
        (PayloadTooLarge("m"), 413, "invalid_request_error", "request_too_large"),
        (RateLimited("m"), 429, "rate_limit_error", "rate_limit_exceeded"),
        (NotReady("m"), 503, "server_error", "model_loading"),
        (EngineError("m"), 500, "server_error", "engine_error"),
    ],
)
def test_error_body_shape_and_status(exc, status, type_, code):
    assert exc.status == status
    assert error_body(exc) == {"error": {"message": "m", "type": type_, "param": exc.param, "code": code}}


def test_code_can_be_overridden_per_instance_without_changing_the_class():
    assert error_body(InvalidRequest("m", code="bad_thing"))["error"]["code"] == "bad_thing"
    assert InvalidRequest.code is None


def test_rate_limited_sends_retry_after():
    assert RateLimited("slow down", retry_after=7).headers() == {"Retry-After": "7"}
    assert RateLimited("slow down").headers() == {"Retry-After": "1"}
    assert InvalidRequest("m").headers() == {}


def test_every_error_is_a_rill_error():
    for cls in (ConfigError, InvalidRequest, UnsupportedParameter, ContextLengthExceeded, AuthenticationError,
                ModelNotFound, PayloadTooLarge, RateLimited, NotReady, EngineError):
        assert issubclass(cls, RillError)
