"""The legacy completions request (`POST /v1/completions`) as OpenAI documents it, validation only:
what each field does is decided in mapping.py and prompts.py. Every optional field accepts an
explicit null, as the SDKs send one for unset values."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import ConfigDict, Field, StringConstraints

from rill.api.http.wire import SpanId, StrictModel, Tags, WireModel

# A prompt: text, a list of texts (each its own prompt), token ids, or a list of token-id lists.
# The bounds on counts and ids depend on the model and the server: checked in prompts.py.
Prompt = Union[str, list[str], list[int], list[list[int]]]
StopString = Annotated[str, StringConstraints(min_length=1)]


class CompletionStreamOptions(StrictModel):
    include_usage: bool | None = None


class CompletionRequest(WireModel):
    # Unknown top-level fields are accepted (clients send vendor extras) and logged once.
    model_config = ConfigDict(strict=True, extra="allow")

    prompt: Prompt
    model: str | None = None
    suffix: str | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    best_of: Annotated[int, Field(ge=1, le=128)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    stream: bool | None = None
    stream_options: CompletionStreamOptions | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    # Rill's (Opper's) span fields, as on chat completions
    tags: Tags | None = None
    parent_span_id: SpanId | None = None
