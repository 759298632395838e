"""Engine.submit's queue bound: requests that will find a free slot are not counted as queued."""

from __future__ import annotations

import pytest

from rill.backends.fake import FakeBackend
from rill.engine.engine import Engine
from rill.engine.types import Request, SamplingParams
from rill.errors import RateLimited


def request(i: int) -> Request:
    return Request(f"r{i}", tuple(b"hello"), 4, SamplingParams(temperature=0.0))


async def test_free_slots_plus_max_queue_requests_are_accepted_then_429():
    engine = Engine(FakeBackend(max_sequences=4), max_queue=2, max_running=4)  # not started: nothing runs
    streams = [engine.submit(request(i)) for i in range(6)]  # 4 free slots + 2 queued
    assert engine.num_waiting == 6
    with pytest.raises(RateLimited):
        engine.submit(request(6))
    assert len(streams) == 6
