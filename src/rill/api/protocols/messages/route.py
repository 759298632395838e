"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
fast_routes: list = []  # plain Starlette routes served ahead of FastAPI's (see protocols/chat/route.py)
