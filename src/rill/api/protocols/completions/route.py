"""POST /v1/completions (OpenAI's legacy completions): a raw prompt, no chat template."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
fast_routes: list = []  # plain Starlette routes served ahead of FastAPI's (see protocols/chat/route.py)
