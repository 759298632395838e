"""The web UI: static files shipped in the package (rill/web), no build step. `GET /` is the
page; `/ui/...` its scripts and styles. They hold no data (the page calls the API with the key
the user enters), so they are served without an API key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PUBLIC_PREFIX = "/ui/"

router = APIRouter()


# No other site may show the page in a frame (clickjacking): the browser guard refuses a
# cross-site frame by its Sec-Fetch-Dest, and these say the same to browsers that send none.
NO_FRAMES = {"x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'"}


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-cache", **NO_FRAMES})


def mount_ui(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=WEB_DIR), name="ui")
