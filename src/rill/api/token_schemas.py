"""The /tokenize and /detokenize request bodies: Rill's, llama-server's and vLLM's shapes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from rill.api.http.wire import StrictModel
from rill.api.protocols.chat.schemas import Message, Tool


class TokenizeRequest(StrictModel):
    """Exactly one of `content` (plain text: special-token text stays text) or `messages` (the
    prompt a chat request with these messages, and `tools`, would send the model, chat template
    included)."""

    model: str | None = None
    content: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    tools: list[Tool] | None = None


class LlamaServerTokenizeRequest(StrictModel):
    """POST /tokenize as llama.cpp's llama-server takes it (told apart from Rill's own by
    `add_special`, `parse_special` or `with_pieces`); answered as llama-server answers."""

    model: str | None = None
    content: str
    add_special: bool = False  # BOS first, where the model has one
    parse_special: bool = True  # control-token text becomes the control token
    with_pieces: bool = False  # [{id, piece}] rather than [id]


class VllmTokenizeRequest(StrictModel):
    """POST /tokenize as vLLM takes a text (told apart by `prompt`); answered as vLLM answers."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class VllmChatTokenizeRequest(StrictModel):
    """POST /tokenize as vLLM takes a chat (`messages` with one of vLLM's own fields)."""

    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    # accepted only as "not used": Rill renders every chat with the model's own template
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(StrictModel):
    """Rill's, llama-server's ({tokens}) and vLLM's ({model, tokens}) shape alike."""

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]
