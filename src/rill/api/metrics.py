"""GET /metrics: Prometheus text exposition of the engines' state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse

router = APIRouter()

_HELP = {
    "running_sequences": ("gauge", "Sequences in the engine's batch (prefilling or decoding)."),
    "waiting_requests": ("gauge", "Requests waiting for a sequence slot."),
    "kv_cache_used_tokens": ("gauge", "KV cache cells held by running sequences."),
    "kv_cache_capacity_tokens": ("gauge", "KV cache size in tokens."),
    "max_sequences": ("gauge", "Sequence slots (--parallel)."),
    "preemptions_total": ("counter", "Sequences preempted because the KV cache was full."),
    "steps_total": ("counter", "Engine steps (one forward pass each)."),
    "prefix_cache_tokens": ("gauge", "KV cache cells idle slots keep for prefix reuse."),
    "prefix_cache_hits_total": ("counter", "Admissions that reused a cached prompt prefix."),
    "prefix_cache_reused_tokens_total": ("counter", "Prompt tokens taken from the prefix cache."),
    "busy_seconds_total": ("counter", "Engine thread time spent in steps (scheduling, forward pass, "
                           "sampling, detokenizing)."),
    "forward_seconds_total": ("counter", "Engine thread time inside the backend's forward pass; "
                              "1 - forward/busy is the share spent in Python."),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    stats = {model.id: model.engine.stats() for model in request.app.state.router.models()}
    lines: list[str] = []
    for name, (kind, help_text) in _HELP.items():
        lines.append(f"# HELP rill_engine_{name} {help_text}")
        lines.append(f"# TYPE rill_engine_{name} {kind}")
        lines.extend(f'rill_engine_{name}{{model="{_label(model_id)}"}} {values[name]}'
                     for model_id, values in stats.items())
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
