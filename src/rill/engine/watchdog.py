"""A thread that watches an engine's steps: one that runs past a timeout (a hung backend) makes
the engine unavailable and fails its requests (EngineLoop.check_stall). It reads the step's start
time, which the engine thread writes once a step, so watching costs the engine nothing per token.
"""

from __future__ import annotations

import threading

from rill.engine.loop import EngineLoop

MAX_CHECK_INTERVAL_S = 1.0  # a stall is reported at most this long (or a quarter of the timeout) late


class Watchdog:
    def __init__(self, loop: EngineLoop, timeout: float):
        self.loop = loop
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rill-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        interval = min(MAX_CHECK_INTERVAL_S, self.timeout / 4)
        while not self._stop.wait(interval):
            if self.loop.dead:
                return
            self.loop.check_stall(self.timeout)
