"""GET /health (503 while loading, no auth) and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from rill.api.errors import JSONResponse
from rill.errors import ModelNotFound
from rill.router import Model, UpstreamModel

router = APIRouter()


@router.get("/health", summary="Readiness: 200 when the models are loaded, 503 while loading")
async def health(request: Request) -> JSONResponse:
    r = request.app.state.router
    if r.is_ready:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "loading"}, status_code=503)


def _card(model: Model, state: Any) -> dict[str, Any]:
    if isinstance(model, UpstreamModel):
        return {"id": model.id, "object": "model", "created": model.created, "owned_by": "upstream",
                "aliases": sorted(model.aliases), "fallbacks": list(model.fallbacks),
                "capabilities": {"streaming": True}}
    info = model.info
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "rill",
        "aliases": sorted(model.aliases),
        "context_length": info.n_ctx,
        # every local model can call tools: the grammar makes the format, whatever its template
        # reasoning: its chat template has a thinking section, split off as reasoning_content;
        # audio output and web search are the server's (its [audio] extra and [search] provider)
        "capabilities": {"streaming": True, "vision": False, "tools": True,
                         "reasoning": model.template.has_thinking,
                         "audio_output": state.speech is not None, "web_search": state.search is not None},
        "fallbacks": list(model.fallbacks),
    }


@router.get("/v1/models", summary="List the served models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [_card(m, request.app.state) for m in request.app.state.router.models()]})


@router.get("/v1/models/{model_id:path}", summary="Retrieve one served model")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    for m in request.app.state.router.models():
        if model_id == m.id or model_id in m.aliases:
            return JSONResponse(_card(m, request.app.state))
    raise ModelNotFound(f"The model `{model_id}` does not exist.", param="model")
