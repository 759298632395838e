"""One request's state inside the engine thread."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rill.engine.detokenize import Detokenizer
from rill.engine.types import Event, Request, Status


@dataclass(slots=True)
class Sequence:
    request: Request
    publish: Callable[[list[Event]], None]  # hands events to the request's stream (thread-safe)
    rng: np.random.Generator
    detok: Detokenizer
    seq_id: int = -1
    status: Status = Status.WAITING
    num_prefilled: int = 0  # prompt tokens already in the KV cache
    num_generated: int = 0
    num_unreported: int = 0  # tokens generated since the last TextDelta
    last_token: int = -1
    outbox: list[Event] = field(default_factory=list)
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.request.prompt_tokens)

    @property
    def position(self) -> int:
        """Tokens in this sequence's KV cache."""
        return self.num_prefilled + max(0, self.num_generated - 1)

    @property
    def is_done(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)
