"""POST /tokenize and /detokenize (also under /v1/): the served model's token ids and pieces, so
a client can find the ids `logit_bias` takes and count a prompt's tokens."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request

from rill.api.chat import read_body
from rill.api.errors import JSONResponse
from rill.api.plan import prompt_tokens
from rill.api.schemas import ChatCompletionRequest, DetokenizeRequest, TokenizeRequest
from rill.api.tools import plan_tools
from rill.errors import InvalidRequest
from rill.router import LocalModel

router = APIRouter()
T = TypeVar("T", TokenizeRequest, DetokenizeRequest)


def tokenize(body: TokenizeRequest, model: LocalModel) -> dict[str, Any]:
    if (body.content is None) == (body.messages is None):
        raise InvalidRequest("Send exactly one of `content` (text) or `messages` (a chat prompt).",
                             param="content")
    if body.content is not None:
        if body.tools:
            raise InvalidRequest("`tools` shape a chat prompt: send them with `messages`.", param="tools")
        ids = model.tokenize_text(body.content)
    else:
        chat = ChatCompletionRequest.model_construct(messages=body.messages, tools=body.tools)
        tools = plan_tools(chat)
        ids = prompt_tokens(chat, model, tools.offered if tools else ())
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


def detokenize(body: DetokenizeRequest, model: LocalModel) -> dict[str, Any]:
    n_vocab = model.info.n_vocab
    for i, token in enumerate(body.tokens):
        if token >= n_vocab:
            raise InvalidRequest(f"Token id {token} is not in this model's vocabulary (0..{n_vocab - 1}).",
                                 param=f"tokens[{i}]")
    text = b"".join(model.token_bytes(t) for t in body.tokens).decode("utf-8", "replace")
    return {"model": model.id, "content": text}


async def _answer(request: Request, schema: type[T], handle: Callable[[T, LocalModel], dict[str, Any]]) -> JSONResponse:
    body = await read_body(request, schema)
    model = request.app.state.router.resolve(body.model)
    if not isinstance(model, LocalModel):
        raise InvalidRequest(f"`model`: {model.id} is served by an upstream server, whose tokenizer Rill "
                             "does not have; tokenize with a local model.", param="model")
    return JSONResponse(await anyio.to_thread.run_sync(handle, body, model))


def _body(schema: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}


@router.post("/tokenize", summary="Text or chat messages -> the model's token ids and pieces",
             openapi_extra=_body("TokenizeRequest"))
@router.post("/v1/tokenize", include_in_schema=False)
async def tokenize_route(request: Request) -> JSONResponse:
    return await _answer(request, TokenizeRequest, tokenize)


@router.post("/detokenize", summary="Token ids -> text (control tokens contribute no text)",
             openapi_extra=_body("DetokenizeRequest"))
@router.post("/v1/detokenize", include_in_schema=False)
async def detokenize_route(request: Request) -> JSONResponse:
    return await _answer(request, DetokenizeRequest, detokenize)
