"""POST /v1/responses (OpenAI's Responses API) and the stored responses' routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
fast_routes: list = []  # plain Starlette routes served ahead of FastAPI's (see protocols/chat/route.py)
