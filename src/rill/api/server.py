"""uvicorn's server, taught to end generations before its graceful shutdown."""

from __future__ import annotations

from types import FrameType
from typing import Callable

import uvicorn


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT, first run `on_exit` (stop the engines: every stream in flight gets one
    error event and closes, every waiting request a 503). uvicorn's graceful shutdown then finds
    the connections finished instead of cutting them mid-body after its grace period."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._on_exit()
        super().handle_exit(sig, frame)
