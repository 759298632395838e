"""GET and HEAD /health (no auth: load balancers probe it), GET /v1/models and /v1/models/{id}.

/health answers 200 only when every configured model can serve: 503 with Retry-After while one
is loading, 503 when one's engine stalled or crashed (docs/faults.md). /v1/models answers 503
with Retry-After, in OpenAI's error shape, until every model is loaded, so a client that caches
the list never caches a partial one; a model's own card is there as soon as it is loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from rill.api.http.errors import JSONResponse
from rill.errors import ModelNotFound, NotReady
from rill.router import Model, Router, UpstreamModel

router = APIRouter()


@router.get("/health", summary="Readiness: 200 when every model can serve; 503 while loading or when an engine failed")
@router.head("/health", include_in_schema=False)  # load balancers' probes: the same status, no body
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    r: Router = state.router
    if state.load_error is not None:
        return JSONResponse({"status": "failed", "message": f"loading the models failed: {state.load_error}"},
                            status_code=503)
    if r.loading:
        return JSONResponse({"status": "loading"}, status_code=503,
                            headers={"Retry-After": str(NotReady.retry_after)})
    unavailable = r.unavailable()
    if unavailable:
        return JSONResponse({"status": "unavailable", "models": unavailable}, status_code=503)
    return JSONResponse({"status": "ok"})


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


@router.get("/v1/models", summary="List the served models (503 with Retry-After until all are loaded)")
async def list_models(request: Request) -> JSONResponse:
    r: Router = request.app.state.router
    if r.loading:
        raise NotReady(f"Models are still loading ({', '.join(r.loading)}); retry when GET /health answers 200.")
    return JSONResponse({"object": "list", "data": [_card(m, request.app.state) for m in r.models()]})


@router.get("/v1/models/{model_id:path}", summary="Retrieve one served model")
async def get_model(model_id: str, request: Request) -> JSONResponse:
    if not model_id:
        raise ModelNotFound("The model `` does not exist.", param="model")
    return JSONResponse(_card(request.app.state.router.resolve(model_id), request.app.state))
