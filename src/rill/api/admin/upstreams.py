"""GET /v1/upstreams: each upstream model's replicas and their state (healthy, ejected since, in
flight, requests, errors, prefix-hit rate), for the operator: an admin key, or anyone on an open
server."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from rill.api.http.auth import OPEN, caller_of
from rill.errors import PermissionDenied
from rill.router import UpstreamModel

router = APIRouter()


@router.get("/v1/upstreams", summary="Upstream models' replicas: health, load and prefix-cache hits (admin)")
async def list_upstreams(request: Request) -> JSONResponse:
    caller = caller_of(request)
    if not caller.admin and caller is not OPEN:
        raise PermissionDenied("GET /v1/upstreams needs an admin key (--api-key, or `rill keys create --admin`).")
    models = [m for m in request.app.state.router.models() if isinstance(m, UpstreamModel)]
    return JSONResponse({"object": "list", "data": [m.upstream.snapshot() for m in models]})
