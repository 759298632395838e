"""The core's events -> the Responses API's: the response object and its output items as they
grow, and the stream events that tell a client so, each with the next `sequence_number`.

One ResponseBuilder serves a streamed and a non-streamed response alike (a non-streamed answer
is the last event's response), so what a client assembles from the stream equals what it would
have been sent whole. Items open and close in order: a message (its `output_text` part), a
reasoning item (its `reasoning_text` part), a function call, a custom tool call or a client tool
search call. A call whose arguments were cut short (the token cap) ends `incomplete`.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from typing import Any, Callable, Sequence

from rill.api.core.events import CallEnd, CallInput, CallStart, Finish, OutEvent, ReasoningOut, TextOut, Usage
from rill.api.protocols.responses import schemas as w
from rill.api.protocols.responses.tools import Names
from rill.engine.types import TokenLogprob
from rill.errors import RillError
from rill.search.context import Source, citations

_OBFUSCATION_ALPHABET = string.ascii_letters + string.digits
WireEvent = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


class ResponseBuilder:
    """`response`: the response object so far (status in_progress, output []); `names` maps the
    model's tool names back to the client's; `token_bytes` gives a token's bytes (logprobs);
    `sources`: web search results the answer may cite; `obfuscate`: delta events carry random
    padding (OpenAI's `obfuscation`, on unless stream_options says otherwise)."""

    def __init__(self, response: dict[str, Any], names: Names, *, logprobs: bool = False,
                 token_bytes: Callable[[int], bytes] | None = None, sources: Sequence[Source] = (),
                 obfuscate: bool = False, rand: random.Random | None = None):
        self.response = response
        self.output: list[dict[str, Any]] = response["output"]
        self._names = names
        self._logprobs = logprobs
        self._token_bytes = token_bytes or (lambda token: b"")
        self._sources = tuple(sources)
        self._obfuscate = obfuscate
        self._rand = rand or random.Random()
        self._seq = 0
        self._open: dict[str, Any] | None = None  # the item being written
        self._text: list[str] = []  # the open message's (or reasoning's) text
        self._entries: list[dict[str, Any]] = []  # the open message's logprobs
        self._calls: dict[int, dict[str, Any]] = {}  # call index -> its item
        self._call_text: dict[int, list[str]] = {}  # an open call item's id() -> its input so far

    # ---- events ----

    def _event(self, kind: str, **fields: Any) -> WireEvent:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _delta(self, kind: str, **fields: Any) -> WireEvent:
        event = self._event(kind, **fields)
        if self._obfuscate:
            event["obfuscation"] = "".join(self._rand.choices(_OBFUSCATION_ALPHABET, k=self._rand.randint(1, 24)))
        return event

    def _snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.response))  # the object as it is now, not as it will become

    def start(self) -> list[WireEvent]:
        """response.created and response.in_progress (and the web search made before the model
        wrote, when it made one: its item, already complete)."""
        out = [self._event("response.created", response=self._snapshot()),
               self._event("response.in_progress", response=self._snapshot())]
        for index, item in enumerate(self.output):  # items made before generation (web_search_call)
            added = {**item, "status": "in_progress"}
            out.append(self._event("response.output_item.added", output_index=index, item=added))
            if item["type"] == "web_search_call":
                for phase in ("in_progress", "searching", "completed"):
                    out.append(self._event(f"response.web_search_call.{phase}", output_index=index,
                                           item_id=item["id"]))
            out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return out

    def feed(self, event: OutEvent) -> list[WireEvent]:
        if isinstance(event, TextOut):
            return self._text_out(event)
        if isinstance(event, ReasoningOut):
            return self._reasoning_out(event)
        if isinstance(event, CallStart):
            return self._call_start(event)
        if isinstance(event, CallInput):
            return self._call_input(event)
        if isinstance(event, CallEnd):
            return self._call_end(event)
        return []

    def _index(self) -> int:
        return len(self.output) - 1

    def _add(self, item: dict[str, Any]) -> list[WireEvent]:
        self.output.append(item)
        self._open = item
        return [self._event("response.output_item.added", output_index=self._index(), item=dict(item))]

    def _text_out(self, event: TextOut) -> list[WireEvent]:
        out: list[WireEvent] = []
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            out += self._add({"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                              "content": []})
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            out.append(self._event("response.content_part.added", item_id=self._open["id"],  # type: ignore[index]
                                   output_index=self._index(), content_index=0, part=part))
        entries = [self._logprob(e) for e in event.logprobs] if self._logprobs else []
        self._text.append(event.text)
        self._entries += entries
        if event.text or entries:
            out.append(self._delta("response.output_text.delta", item_id=self._open["id"],  # type: ignore[index]
                                   output_index=self._index(), content_index=0, delta=event.text, logprobs=entries))
        return out

    def _logprob(self, entry: TokenLogprob) -> dict[str, Any]:
        def alternative(token: int, logprob: float) -> dict[str, Any]:
            piece = self._token_bytes(token)
            return {"token": piece.decode("utf-8", "replace"), "bytes": list(piece), "logprob": logprob}

        return {"token": entry.text, "bytes": list(self._token_bytes(entry.token)), "logprob": entry.logprob,
                "top_logprobs": [alternative(t, lp) for t, lp in entry.top]}

    def _reasoning_out(self, event: ReasoningOut) -> list[WireEvent]:
        out: list[WireEvent] = []
        if self._open is None or self._open["type"] != "reasoning":
            out += self._close()
            out += self._add({"id": new_id("rs"), "type": "reasoning", "summary": [], "content": [],
                              "status": "in_progress"})
            out.append(self._event("response.content_part.added", item_id=self._open["id"],  # type: ignore[index]
                                   output_index=self._index(), content_index=0,
                                   part={"type": "reasoning_text", "text": ""}))
        self._text.append(event.text)
        out.append(self._delta("response.reasoning_text.delta", item_id=self._open["id"],  # type: ignore[index]
                               output_index=self._index(), content_index=0, delta=event.text))
        return out

    def _call_start(self, event: CallStart) -> list[WireEvent]:
        out = self._close()
        wire = self._names.wire(event.name, event.custom)
        item: dict[str, Any]
        if wire.kind == "tool_search":
            item = {"id": new_id("tsc"), "type": "tool_search_call", "call_id": event.id, "execution": "client",
                    "arguments": {}, "status": "in_progress"}
        elif wire.kind == "custom":
            item = {"id": new_id("ctc"), "type": "custom_tool_call", "call_id": event.id, "name": wire.name,
                    "input": ""}
        else:
            item = {"id": new_id("fc"), "type": "function_call", "call_id": event.id, "name": wire.name,
                    "arguments": "", "status": "in_progress"}
        if wire.namespace is not None and wire.kind != "tool_search":
            item["namespace"] = wire.namespace
        self._calls[event.call] = item
        self._call_text[id(item)] = []
        out += self._add(item)
        return out

    def _call_input(self, event: CallInput) -> list[WireEvent]:
        item = self._calls[event.call]
        self._call_text[id(item)].append(event.text)
        kind = item["type"]
        index = self.output.index(item)
        if kind == "function_call":
            return [self._delta("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                delta=event.text)]
        if kind == "custom_tool_call":
            return [self._delta("response.custom_tool_call_input.delta", item_id=item["id"], output_index=index,
                                delta=event.text)]
        return []  # a tool search's arguments are an object: sent whole when the call ends

    def _call_end(self, event: CallEnd) -> list[WireEvent]:
        item = self._calls.get(event.call)
        if item is None or item is not self._open:
            return []
        return self._close_call(item, event.arguments, "completed")

    def _close_call(self, item: dict[str, Any], text: str, status: str) -> list[WireEvent]:
        index = self.output.index(item)
        self._call_text.pop(id(item), None)
        out: list[WireEvent] = []
        if item["type"] == "function_call":
            item["arguments"], item["status"] = text, status
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   arguments=text))
        elif item["type"] == "custom_tool_call":
            item["input"] = text
            out.append(self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index,
                                   input=text))
        else:
            try:
                item["arguments"] = json.loads(text)
            except ValueError:
                item["arguments"] = text  # cut short: what there is
            item["status"] = status
        self._open = None
        out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return out

    def _close(self, status: str = "completed") -> list[WireEvent]:
        """Close the open item (a call still open was cut short)."""
        item = self._open
        if item is None:
            return []
        index = self._index()
        out: list[WireEvent] = []
        if item["type"] == "message":
            text = "".join(self._text)
            part: dict[str, Any] = {"type": "output_text", "annotations": [], "logprobs": list(self._entries),
                                    "text": text}
            for n, annotation in enumerate(self._annotations(text)):
                part["annotations"].append(annotation)
                out.append(self._event("response.output_text.annotation.added", item_id=item["id"],
                                       output_index=index, content_index=0, annotation_index=n,
                                       annotation=annotation))
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=text, logprobs=list(self._entries)))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=dict(part)))
            item["content"] = [part]
        elif item["type"] == "reasoning":
            text = "".join(self._text)
            part = {"type": "reasoning_text", "text": text}
            out.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=text))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=dict(part)))
            item["content"] = [part]
        else:
            return self._close_call(item, "".join(self._call_text.get(id(item), ())), "incomplete")
        item["status"] = status
        self._open, self._text, self._entries = None, [], []
        out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return out

    def _annotations(self, text: str) -> list[dict[str, Any]]:
        if not self._sources:
            return []
        return [{"type": "url_citation", **c["url_citation"]} for c in citations(text, self._sources)]

    # ---- the end ----

    def finish(self, event: Finish) -> list[WireEvent]:
        """close(event), then the final event."""
        return self.close(event) + [self.final()]

    def close(self, event: Finish) -> list[WireEvent]:
        """Close what is open and complete the response object: status completed, or incomplete
        when the token cap (max_output_tokens, or the context's room) cut the answer short; usage."""
        cut = event.reason == "length"
        out = self._close("incomplete" if cut else "completed")
        response = self.response
        response["usage"] = usage_json(event.usage)
        if cut:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            response["status"] = "completed"
            response["completed_at"] = int(time.time())
        return out

    def final(self) -> WireEvent:
        """response.completed (or response.incomplete) with the whole response."""
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=self._snapshot())

    def fail(self, error: RillError) -> list[WireEvent]:
        """An `error` event, then response.failed (the response's `error` saying the same)."""
        out = self._close("incomplete")
        out.append(self._event("error", code=error.code or error.type, message=error.message, param=error.param))
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error" if error.status >= 500 else (error.code or error.type),
                                  "message": error.message}
        out.append(self._event("response.failed", response=self._snapshot()))
        return out


def replay(response: dict[str, Any], starting_after: int | None = None) -> list[WireEvent]:
    """A stored response's stream, rebuilt (`GET /v1/responses/{id}?stream=true`): the events a
    client would have seen, each item's content as one delta; with `starting_after`, only the
    events after that sequence number."""
    seq = 0
    out: list[WireEvent] = []

    def event(kind: str, **fields: Any) -> None:
        nonlocal seq
        out.append({"type": kind, "sequence_number": seq, **fields})
        seq += 1

    start = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None,
             "incomplete_details": None, "error": None}
    event("response.created", response=start)
    event("response.in_progress", response=start)
    for index, item in enumerate(response.get("output") or []):
        kind = item.get("type")
        added = {**item, "status": "in_progress"} if "status" in item else dict(item)
        if kind in ("message", "reasoning"):
            added["content"] = []
        elif kind == "function_call":
            added["arguments"] = ""
        elif kind == "custom_tool_call":
            added["input"] = ""
        event("response.output_item.added", output_index=index, item=added)
        ids = {"item_id": item.get("id"), "output_index": index}
        if kind == "message":
            for c, part in enumerate(item.get("content") or []):
                text = part.get("text", "")
                event("response.content_part.added", **ids, content_index=c,
                      part={**part, "text": "", "annotations": [], "logprobs": []})
                event("response.output_text.delta", **ids, content_index=c, delta=text,
                      logprobs=part.get("logprobs") or [])
                for n, annotation in enumerate(part.get("annotations") or []):
                    event("response.output_text.annotation.added", **ids, content_index=c, annotation_index=n,
                          annotation=annotation)
                event("response.output_text.done", **ids, content_index=c, text=text,
                      logprobs=part.get("logprobs") or [])
                event("response.content_part.done", **ids, content_index=c, part=part)
        elif kind == "reasoning":
            for c, part in enumerate(item.get("content") or []):
                event("response.content_part.added", **ids, content_index=c, part={**part, "text": ""})
                event("response.reasoning_text.delta", **ids, content_index=c, delta=part.get("text", ""))
                event("response.reasoning_text.done", **ids, content_index=c, text=part.get("text", ""))
                event("response.content_part.done", **ids, content_index=c, part=part)
        elif kind == "function_call":
            event("response.function_call_arguments.delta", **ids, delta=item.get("arguments", ""))
            event("response.function_call_arguments.done", **ids, arguments=item.get("arguments", ""))
        elif kind == "custom_tool_call":
            event("response.custom_tool_call_input.delta", **ids, delta=item.get("input", ""))
            event("response.custom_tool_call_input.done", **ids, input=item.get("input", ""))
        elif kind == "web_search_call":
            for phase in ("in_progress", "searching", "completed"):
                event(f"response.web_search_call.{phase}", **ids)
        event("response.output_item.done", output_index=index, item=item)
    status = response.get("status")
    final = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(status, "response.completed")
    event(final, response=response)
    return [e for e in out if starting_after is None or e["sequence_number"] > starting_after]


def item_for_search(search_id: str, query: str, sources: Sequence[Source]) -> dict[str, Any]:
    """The web_search_call item of a search Rill made before the model wrote."""
    return {"id": search_id, "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": query,
                       "sources": [{"type": "url", "url": s.url} for s in sources]}}


def new_response(body: w.ResponseRequest, *, response_id: str, model_id: str, store: bool) -> dict[str, Any]:
    """The response object before anything is generated (status in_progress): the request's
    settings as OpenAI echoes them."""
    text = body.text or w.TextConfig()
    fmt = text.format.model_dump(mode="json", by_alias=True, exclude_none=True) if text.format else {"type": "text"}
    reasoning = body.reasoning or w.ReasoningConfig()
    choice = body.tool_choice
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": "in_progress",
        "background": False, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls, "model": model_id, "output": [],
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id, "prompt_cache_key": body.prompt_cache_key,
        "prompt_cache_retention": body.prompt_cache_retention,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary or reasoning.generate_summary},
        "safety_identifier": body.safety_identifier,
        "service_tier": body.service_tier if body.service_tier not in (None, "auto") else "default",
        "store": store, "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt, "verbosity": text.verbosity or "medium"},
        "tool_choice": "auto" if choice is None else choice if isinstance(choice, str) else choice.model_dump(
            mode="json", exclude_none=True),
        "tools": [t.model_dump(mode="json", exclude_none=True, by_alias=True) for t in body.tools or []],
        "top_logprobs": body.top_logprobs or 0, "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled", "usage": None, "user": body.user,
        "metadata": body.metadata or {},
    }
