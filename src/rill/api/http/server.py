"""uvicorn's server, taught to end generations before its graceful shutdown, and its
configuration: Rill's HTTP protocol (read timeouts, connection and head limits) and enough file
descriptors for --max-connections."""

from __future__ import annotations

import logging
import resource
from types import FrameType
from typing import Any, Callable

import uvicorn

from rill.api.http.protocol import ConnectionLimits, protocol_class
from rill.config import ServerConfig

log = logging.getLogger("rill.api")

SPARE_FILE_DESCRIPTORS = 128  # beside the connections: the model, the database, logs, the listening socket


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


def uvicorn_config(app: Any, config: ServerConfig) -> uvicorn.Config:
    """uvicorn serving `app` with Rill's protocol and limits (docs/security.md)."""
    limits = ConnectionLimits(head_timeout=config.header_timeout, body_timeout=config.body_timeout,
                              max_connections=config.max_connections)
    ensure_file_descriptors(config.max_connections + SPARE_FILE_DESCRIPTORS)
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level,
        access_log=config.log_level == "debug", timeout_graceful_shutdown=5,
        http=protocol_class(limits), timeout_keep_alive=config.keep_alive_timeout)  # type: ignore[arg-type]


def ensure_file_descriptors(wanted: int) -> None:
    """Raise this process's soft limit on open files to `wanted` where the hard limit allows (many
    systems start services at 1,024); warn when it cannot, since past it new connections fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open files are limited to %d (ulimit -n), fewer than --max-connections plus %d spare: "
                    "lower --max-connections or raise the limit", target, SPARE_FILE_DESCRIPTORS)
