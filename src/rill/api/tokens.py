"""POST /tokenize and /detokenize (also under /v1/): the served model's token ids and pieces, so
a client can find the ids `logit_bias` takes and count a prompt's tokens.

Three request shapes, each answered in its own: Rill's (`content` or `messages`: ids, pieces and
bytes), llama.cpp's llama-server (`content` with `add_special`, `parse_special` or `with_pieces`:
`{"tokens": [...]}`) and vLLM's (`prompt`, or `messages` with one of vLLM's fields: `count`,
`max_model_len`, `tokens`, `token_strs`). /detokenize's shapes differ only in the name of the
text, so its answer carries both (`content` and vLLM's `prompt`). docs/features.md has the table.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request

from rill.api.http.body import read_json, validated
from rill.api.http.errors import JSONResponse
from rill.api.http.offload import off_loop
from rill.api.core.plan import prompt_parts
from rill.api.protocols.chat.plan import to_core
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.api.token_schemas import (DetokenizeRequest, LlamaServerTokenizeRequest, TokenizeRequest,
                                    VllmChatTokenizeRequest, VllmTokenizeRequest)
from rill.api.core.tools import plan_tools
from rill.errors import InvalidRequest
from rill.router import LocalModel

router = APIRouter()
Cancelled = Callable[[], bool]
TokenizeBody = TokenizeRequest | LlamaServerTokenizeRequest | VllmTokenizeRequest | VllmChatTokenizeRequest

# Fields that only a peer's request has: they tell its shape from Rill's.
LLAMA_SERVER_FIELDS = frozenset({"add_special", "parse_special", "with_pieces"})
VLLM_FIELDS = frozenset({"prompt", "add_special_tokens", "return_token_strs", "add_generation_prompt",
                         "continue_final_message", "chat_template", "chat_template_kwargs", "mm_processor_kwargs"})


def tokenize_shape(data: Any) -> type[TokenizeBody]:
    """Which shape a /tokenize body is in (Rill's, when nothing says otherwise)."""
    if isinstance(data, dict):
        if data.keys() & LLAMA_SERVER_FIELDS:
            return LlamaServerTokenizeRequest
        if data.keys() & VLLM_FIELDS:
            return VllmChatTokenizeRequest if "messages" in data else VllmTokenizeRequest
    return TokenizeRequest


def _piece(model: LocalModel, token: int) -> bytes:
    """What a token spells, control tokens as their text (the peers show them so)."""
    return model.prompts.spelling(token)


def tokenize(body: TokenizeRequest, model: LocalModel, cancelled: Cancelled) -> dict[str, Any]:
    """Rill's shape: plain text (control-token text stays text), or the prompt a chat request
    with these messages and tools would send."""
    if (body.content is None) == (body.messages is None):
        raise InvalidRequest("Send exactly one of `content` (text) or `messages` (a chat prompt).",
                             param="content")
    if body.content is not None:
        if body.tools:
            raise InvalidRequest("`tools` shape a chat prompt: send them with `messages`.", param="tools")
        ids = model.tokenize_text(body.content)
    else:
        gen = to_core(ChatCompletionRequest.model_construct(messages=body.messages, tools=body.tools))
        tools = plan_tools(gen)
        ids = model.tokenize_prompt(prompt_parts(gen, model, tools.offered if tools else ()), cancelled=cancelled)
    tokens, pieces = [], []
    for token in ids:
        piece = model.token_bytes(token)
        pieces.append(piece)
        tokens.append({"id": token, "piece": piece.decode("utf-8", "replace"), "bytes": list(piece)})
    out: dict[str, Any] = {"model": model.id, "count": len(ids), "tokens": tokens}
    if body.content is not None:
        # A vocabulary may lack some byte values (SmolLM2 has no token for the bytes that start
        # U+40000..U+BFFFF, nor for a few control characters): llama.cpp drops them silently.
        out["exact"] = b"".join(pieces) == body.content.encode("utf-8", "surrogatepass")
    return out


def tokenize_llama_server(body: LlamaServerTokenizeRequest, model: LocalModel, cancelled: Cancelled) -> dict[str, Any]:
    """llama-server's answer: `{"tokens": [id, ...]}`, or with_pieces `[{"id", "piece"}, ...]`,
    a piece being its text, or its bytes where they are not whole UTF-8."""
    ids = _text_tokens(model, body.content, add_bos=body.add_special, parse_special=body.parse_special,
                       cancelled=cancelled)
    if not body.with_pieces:
        return {"tokens": ids}
    tokens = []
    for token in ids:
        piece = _piece(model, token)
        try:
            shown: Any = piece.decode("utf-8")
        except UnicodeDecodeError:
            shown = list(piece)
        tokens.append({"id": token, "piece": shown})
    return {"tokens": tokens}


def tokenize_vllm(body: VllmTokenizeRequest | VllmChatTokenizeRequest, model: LocalModel,
                  cancelled: Cancelled) -> dict[str, Any]:
    """vLLM's answer: count, max_model_len, tokens, and token_strs (each token's text) when asked."""
    if isinstance(body, VllmTokenizeRequest):
        ids = _text_tokens(model, body.prompt, add_bos=body.add_special_tokens, parse_special=True,
                           cancelled=cancelled)
    else:
        ids = _vllm_chat_tokens(body, model, cancelled)
    strs = [_piece(model, t).decode("utf-8", "replace") for t in ids] if body.return_token_strs else None
    return {"count": len(ids), "max_model_len": model.info.n_ctx, "tokens": ids, "token_strs": strs}


def _text_tokens(model: LocalModel, text: str, *, add_bos: bool, parse_special: bool, cancelled: Cancelled) -> list[int]:
    """A text's tokens, BOS first if asked and the model has one; control-token text parsed
    in linear time (prompt_tokens.py) when parse_special."""
    add_bos = add_bos and model.info.add_bos
    if not parse_special:
        return model.tokenize_text(text, add_bos=add_bos)
    return model.tokenize_prompt([(text, False)], add_bos=add_bos, cancelled=cancelled)


def _vllm_chat_tokens(body: VllmChatTokenizeRequest, model: LocalModel, cancelled: Cancelled) -> list[int]:
    if body.chat_template is not None:
        raise InvalidRequest("`chat_template`: Rill renders every chat with the model's own template; leave it "
                             "out.", param="chat_template")
    if body.mm_processor_kwargs:
        raise InvalidRequest("`mm_processor_kwargs`: this model reads text only.", param="mm_processor_kwargs")
    kwargs = dict(body.chat_template_kwargs or {})
    thinking = kwargs.pop("enable_thinking", None)
    if kwargs or not isinstance(thinking, (bool, type(None))):
        name = next(iter(kwargs), "enable_thinking")
        raise InvalidRequest(f"`chat_template_kwargs.{name}`: Rill's templates take only `enable_thinking` "
                             "(a boolean).", param=f"chat_template_kwargs.{name}")
    if body.continue_final_message and body.add_generation_prompt:
        raise InvalidRequest("`continue_final_message` continues the last message: send it with "
                             "`add_generation_prompt: false`.", param="continue_final_message")
    gen = to_core(ChatCompletionRequest.model_construct(messages=body.messages, tools=body.tools))
    tools = plan_tools(gen)
    parts = prompt_parts(gen, model, tools.offered if tools else (), add_generation_prompt=body.add_generation_prompt,
                         enable_thinking=thinking)
    if body.continue_final_message:
        # the prompt ends where the last message's text ends, ready for the model to go on
        last = max((i for i, (_, is_message) in enumerate(parts) if is_message), default=len(parts) - 1)
        parts = parts[: last + 1]
    return model.tokenize_prompt(parts, add_bos=body.add_special_tokens and model.info.add_bos, cancelled=cancelled)


def detokenize(body: DetokenizeRequest, model: LocalModel, cancelled: Cancelled) -> dict[str, Any]:
    n_vocab = model.info.n_vocab
    for i, token in enumerate(body.tokens):
        if token >= n_vocab:
            raise InvalidRequest(f"Token id {token} is not in this model's vocabulary (0..{n_vocab - 1}).",
                                 param=f"tokens[{i}]")
    text = b"".join(model.token_bytes(t) for t in body.tokens).decode("utf-8", "replace")
    return {"model": model.id, "content": text, "prompt": text}


_HANDLERS: dict[type, Callable[[Any, LocalModel, Cancelled], dict[str, Any]]] = {
    TokenizeRequest: tokenize, LlamaServerTokenizeRequest: tokenize_llama_server,
    VllmTokenizeRequest: tokenize_vllm, VllmChatTokenizeRequest: tokenize_vllm, DetokenizeRequest: detokenize}


async def _answer(request: Request, schema_of: Callable[[Any], type]) -> JSONResponse:
    data = await read_json(request)
    schema = schema_of(data)
    body = validated(data, schema)
    model = request.app.state.router.resolve(body.model)
    if not isinstance(model, LocalModel):
        raise InvalidRequest(f"`model`: {model.id} is served by an upstream server, whose tokenizer Rill "
                             "does not have; tokenize with a local model.", param="model")
    handle = _HANDLERS[schema]
    return JSONResponse(await off_loop(request, lambda cancelled: handle(body, model, cancelled)))


def _body(*schemas: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{s}"} for s in schemas]
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}}}


@router.post("/tokenize", summary="Text or chat messages -> the model's token ids and pieces (Rill's, "
                                  "llama-server's or vLLM's request shape)",
             openapi_extra=_body("TokenizeRequest", "LlamaServerTokenizeRequest", "VllmTokenizeRequest",
                                 "VllmChatTokenizeRequest"))
@router.post("/v1/tokenize", include_in_schema=False)
async def tokenize_route(request: Request) -> JSONResponse:
    return await _answer(request, tokenize_shape)


@router.post("/detokenize", summary="Token ids -> text (control tokens contribute no text)",
             openapi_extra=_body("DetokenizeRequest"))
@router.post("/v1/detokenize", include_in_schema=False)
async def detokenize_route(request: Request) -> JSONResponse:
    return await _answer(request, lambda _: DetokenizeRequest)
