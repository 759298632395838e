"""What every wire model shares: strict base models, the metadata/tag/span-id types, and the
OpenAI-shaped error body (for the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class WireModel(BaseModel):
    # Strict types: `"stream": "yes"` or `"max_tokens": "5"` is a 400, as on OpenAI, not a guess.
    model_config = ConfigDict(strict=True)


class StrictModel(WireModel):
    model_config = ConfigDict(strict=True, extra="forbid")


MetadataKey = Annotated[str, StringConstraints(max_length=64)]
# Opper's tags: any JSON values; keys are filterable names
Tags = Annotated[dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Any], Field(max_length=64)]
SpanId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]





class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
