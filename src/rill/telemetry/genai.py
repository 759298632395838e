"""OpenTelemetry's GenAI semantic conventions (open-telemetry/semantic-conventions-genai) for one
completion: the request's attributes from the fields a client sent in its protocol, the answer's
from what Rill recorded, and (opted in) the conversation in the conventions' parts format.
Plain data in, attribute dicts out: no OpenTelemetry import here."""

from __future__ import annotations

from typing import Any, Mapping

import orjson

AttributeValue = str | bool | int | float | list[str]

# Rill's span types (SpanRecord.type) -> gen_ai.operation.name
OPERATIONS = {"chat.completion": "chat", "responses": "chat", "messages": "chat", "completions": "text_completion"}
# the request field each protocol caps the answer with, in order of precedence
_MAX_TOKENS = {"chat.completion": ("max_completion_tokens", "max_tokens"), "responses": ("max_output_tokens",),
               "messages": ("max_tokens",), "completions": ("max_tokens",)}


def operation(protocol: str | None) -> str:
    return OPERATIONS.get(protocol or "", "chat")


def request_attributes(protocol: str | None, params: dict[str, Any]) -> dict[str, AttributeValue]:
    """gen_ai.request.* (and output.type) from the request's fields as the client named them."""
    out: dict[str, AttributeValue] = {}
    for key in _MAX_TOKENS.get(protocol or "", ("max_tokens",)):
        if _number(params.get(key)):
            out["gen_ai.request.max_tokens"] = int(params[key])
            break
    for key in ("temperature", "top_p", "top_k", "frequency_penalty", "presence_penalty"):
        if _number(params.get(key)):
            out[f"gen_ai.request.{key}"] = float(params[key])
    if _number(params.get("seed")):
        out["gen_ai.request.seed"] = int(params["seed"])
    stop = params.get("stop_sequences" if protocol == "messages" else "stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        out["gen_ai.request.stop_sequences"] = list(stop)
    n = params.get("n")
    if _number(n) and n != 1:
        out["gen_ai.request.choice.count"] = int(n)
    if params.get("stream") is True:
        out["gen_ai.request.stream"] = True
    kind = _output_type(protocol, params)
    if kind is not None:
        out["gen_ai.output.type"] = kind
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _output_type(protocol: str | None, params: dict[str, Any]) -> str | None:
    if protocol == "chat.completion":
        fmt = params.get("response_format")
    elif protocol == "responses":
        fmt = (params.get("text") or {}).get("format") if isinstance(params.get("text"), dict) else None
    else:
        return None
    if not isinstance(fmt, dict):
        return None
    return "json" if fmt.get("type") in ("json_object", "json_schema") else "text"


def usage_attributes(usage: dict[str, Any] | None) -> dict[str, AttributeValue]:
    """gen_ai.usage.*: input tokens count the cached ones too, as the conventions ask."""
    if not usage:
        return {}
    out: dict[str, AttributeValue] = {}
    for key, name in (("prompt_tokens", "gen_ai.usage.input_tokens"), ("completion_tokens", "gen_ai.usage.output_tokens")):
        if _number(usage.get(key)):
            out[name] = int(usage[key])
    for key, name in (("cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
                      ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens")):
        if _number(usage.get(key)) and usage[key]:
            out[name] = int(usage[key])
    return out


# ---- content (opt-in): the conventions' message, part and tool-definition shapes -------------

def content_attributes(protocol: str | None, messages: Any, params: dict[str, Any]) -> dict[str, AttributeValue]:
    """gen_ai.input.messages, gen_ai.system_instructions (Responses' instructions and Messages'
    system, which those APIs keep apart from the history) and gen_ai.tool.definitions, as JSON
    strings (span attributes cannot hold nested objects)."""
    out: dict[str, AttributeValue] = {}
    history = list(messages) if isinstance(messages, list) else ([{"role": "user", "content": messages}]
                                                                 if isinstance(messages, str) else [])
    if protocol in ("responses", "messages") and history and isinstance(history[0], dict) \
            and history[0].get("role") == "system":
        out["gen_ai.system_instructions"] = _json(_parts(history[0].get("content")))
        history = history[1:]
    converted = [m for m in (_message(item) for item in history) if m is not None]
    if converted:
        out["gen_ai.input.messages"] = _json(converted)
    tools = [t for t in (_tool(tool) for tool in params.get("tools") or () if isinstance(tool, dict)) if t]
    if tools:
        out["gen_ai.tool.definitions"] = _json(tools)
    return out


def output_attributes(output: Any, finish_reasons: list[str]) -> dict[str, AttributeValue]:
    """gen_ai.output.messages from what Rill's span keeps (a Chat Completions message per
    choice, or a Responses/Messages answer relayed as it came)."""
    answers = output if isinstance(output, list) else [output] if output is not None else []
    messages = []
    for i, answer in enumerate(answers):
        message = _message(answer) if isinstance(answer, dict) else None
        if message is None:
            continue
        message["role"] = "assistant"
        message["finish_reason"] = finish_reasons[i] if i < len(finish_reasons) else (finish_reasons or ["stop"])[-1]
        messages.append(message)
    return {"gen_ai.output.messages": _json(messages)} if messages else {}


def _message(item: Any) -> dict[str, Any] | None:
    """One history item of any protocol -> {role, parts}."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind == "function_call":  # Responses: a call item
        return {"role": "assistant", "parts": [_call(item.get("call_id") or item.get("id"), item.get("name"), item.get("arguments"))]}
    if kind == "function_call_output":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": item.get("call_id"), "response": item.get("output")}]}
    if "role" not in item:
        if isinstance(item.get("output"), list):  # a Responses answer, relayed as it came
            parts = [p for out in item["output"] for p in (_message(out) or {"parts": []})["parts"]]
            return {"role": "assistant", "parts": parts}
        return None
    role = item["role"] if item["role"] != "developer" else "system"
    if role == "tool":  # Chat Completions' tool result
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": item.get("tool_call_id"),
                                           "response": item.get("content")}]}
    parts = _parts(item.get("content"))
    for call in item.get("tool_calls") or ():  # Chat Completions' calls
        if isinstance(call, dict):
            function = call.get("function") or {}
            parts.append(_call(call.get("id"), function.get("name"), function.get("arguments")))
    return {"role": role if isinstance(role, str) else "user", "parts": parts}


def _parts(content: Any) -> list[dict[str, Any]]:
    """A message's content in any protocol's shape -> the conventions' parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": block.get("text", "")})
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": block.get("thinking") or block.get("text") or ""})
        elif kind == "tool_use":  # Messages
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")})
        elif kind == "refusal":
            parts.append({"type": "text", "content": block.get("refusal", "")})
        else:  # images, audio, files: their kind without the bytes
            parts.append({"type": str(kind or "unknown")})
    return parts


def _call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            pass  # kept as the text the model wrote
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def _tool(tool: dict[str, Any]) -> dict[str, Any] | None:
    """A tool in Chat Completions', Responses' or Messages' shape -> {type, name, description, parameters}."""
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = function.get("name")
    if not isinstance(name, str):
        return None
    out: dict[str, Any] = {"type": "function" if tool.get("type") in (None, "function", "custom") else tool["type"], "name": name}
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    schema = function.get("parameters", function.get("input_schema"))
    if isinstance(schema, dict):
        out["parameters"] = schema
    return out


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def rill_attributes(span_id: str, trace_id: str, protocol: str | None, tags: dict[str, Any],
                    extra: Mapping[str, Any] | None = None) -> dict[str, AttributeValue]:
    """Rill's own attributes: its span and trace ids (the trace browser's), the protocol, tags."""
    out: dict[str, AttributeValue] = {"rill.span_id": span_id, "rill.trace_id": trace_id}
    if protocol:
        out["rill.protocol"] = protocol
    for key, value in tags.items():
        if isinstance(value, str | bool | int | float):
            out[f"rill.tag.{key}"] = value
    for key, value in (extra or {}).items():
        if value is not None:
            out[key] = value
    return out
