"""An upstream model's replicas behind the one interface an Upstream has (complete, stream,
relay): each request is routed (routing.py), tried on the next replica when one fails before its
first byte, and every outcome feeds the replicas' health (health.py) and prefix index
(prefix_index.py). One replica is one Upstream: its own connection pool and concurrency limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, TypeVar

from rill.backends.upstream import Pool, Relayed, Upstream
from rill.backends.upstream_errors import UpstreamError
from rill.backends.upstream_stream import UpstreamStream
from rill.config import ReplicaConfig, UpstreamConfig
from rill.upstreams.health import Health
from rill.upstreams.prefix_index import ReplicaIndex
from rill.upstreams.routing import Policy, Route

log = logging.getLogger("rill.upstream")

T = TypeVar("T")
PROBE_TIMEOUT_S = 5.0  # an active health check's limit (or the model's timeout, if shorter)
LEARN_SLACK = 0.8  # a replica "held what was predicted" when it reports at least this share of it


class Replica:
    def __init__(self, position: int, replica: ReplicaConfig, config: UpstreamConfig, pool: Pool | None,
                 clock: Callable[[], float]):
        self.position, self.url, self.weight = position, replica.url, replica.weight
        self.client = Upstream(config.for_replica(replica), pool=pool)
        self.health = Health(config.eject_after, config.eject_seconds, clock)
        self.index = ReplicaIndex()
        self.requests = 0  # sent to it
        self.errors = 0  # of those, failed (5xx, connect errors, timeouts)
        self.prompt_tokens = 0  # as its usage reported them
        self.cached_tokens = 0
        self.routed: Counter[str] = Counter()  # why it was picked: prefix, home, load, ...

    @property
    def in_flight(self) -> int:
        return self.client.in_flight

    def snapshot(self) -> dict[str, Any]:
        health = self.health
        return {"url": self.url, "weight": self.weight, "state": health.state,
                "ejected_since": int(health.ejected_since) if health.ejected_since is not None else None,
                "ejections": health.ejections, "consecutive_failures": health.failures,
                "in_flight": self.in_flight, "requests": self.requests, "errors": self.errors,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "prefix_hit_rate": round(self.cached_tokens / self.prompt_tokens, 4) if self.prompt_tokens else None,
                "routed": dict(self.routed)}


class Ticket:
    """One request's route, settled when its answer ends: usage teaches the prefix index."""

    def __init__(self, replica_set: ReplicaSet, replica: Replica, route: Route, text_blocks: int):
        self.replica_set, self.replica, self.route, self.text_blocks = replica_set, replica, route, text_blocks

    def settle(self, usage: dict[str, Any] | None, broken: bool = False) -> None:
        replica = self.replica
        if broken:
            self.replica_set.failed(replica)
            return
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens") or usage.get("input_tokens")
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if not isinstance(prompt, int) or prompt <= 0:
            return
        replica.prompt_tokens += prompt
        if not isinstance(cached, int):
            return  # an upstream that does not report its cache: the index stays as routed
        replica.cached_tokens += cached
        predicted = self.route.matched.get(replica.position, 0)
        if self.route.hashes and predicted:
            held = int(cached / prompt * self.text_blocks / LEARN_SLACK)
            replica.index.learn(predicted, min(held, predicted))


class ReplicaSet:
    """What UpstreamModel.upstream is: one model, one or more replicas."""

    def __init__(self, config: UpstreamConfig, *, pool: Pool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.name = config.name
        self.replicas = [Replica(n, r, config, pool, clock) for n, r in enumerate(config.endpoints)]
        self.policy = Policy(config.routing, balance_abs=config.balance_abs_threshold,
                             balance_rel=config.balance_rel_threshold, cache_threshold=config.cache_threshold)
        self._checker: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    def start(self) -> None:
        """Start the active health checks (several replicas, a health_path and an interval)."""
        config = self.config
        if len(self.replicas) > 1 and config.health_path and config.health_interval > 0 and self._checker is None:
            self._checker = asyncio.create_task(self._check_forever(), name=f"rill-health-{self.name}")

    async def aclose(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.wait((self._checker,))
        for replica in self.replicas:
            await replica.client.aclose()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        ticket, result = await self._tried(body, lambda client: client.complete(body))
        ticket.settle(result.get("usage"))
        return result

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        ticket, stream = await self._tried(body, lambda client: client.stream(body))
        stream.on_end = ticket.settle
        return stream

    async def relay(self, path: str, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Relayed:
        ticket, answer = await self._tried(body, lambda client: client.relay(path, body, headers))
        answer.on_end = ticket.settle
        return answer

    def snapshot(self) -> dict[str, Any]:
        return {"model": self.name, "routing": self.config.routing if len(self.replicas) > 1 else "single",
                "in_flight": self.in_flight, "replicas": [r.snapshot() for r in self.replicas]}

    def failed(self, replica: Replica) -> None:
        replica.errors += 1
        if len(self.replicas) > 1 and replica.health.failure():
            log.warning("upstream %s: replica %s ejected for %.0f s after %d failures", self.name, replica.url,
                        replica.health.eta(), replica.health.failures)

    # ---- routing and tries ---------------------------------------------------------------------

    def _candidates(self) -> list[Replica]:
        """The replicas that may take a request now; when none is (all ejected), the one whose
        ejection ends first is tried early rather than the model failing outright."""
        ready = [r for r in self.replicas if r.health.available()]
        return ready or [min(self.replicas, key=lambda r: r.health.eta())]

    async def _tried(self, body: dict[str, Any], call: Callable[[Upstream], Awaitable[T]]) -> tuple[Ticket, T]:
        """Route the request and try its replicas in order until one answers; the last failure
        when none does (a retryable one: the caller's retries and fallbacks take over)."""
        route = self.policy.route(body, self._candidates())
        first = route.order[0]
        first.routed[route.reason] += 1
        if route.head:
            first.index.insert(route.hashes, route.head)  # requests right behind this one follow it there
        last: UpstreamError | None = None
        for replica in route.order:
            if replica is not first and not replica.health.available():
                continue
            replica.health.take()
            replica.requests += 1
            try:
                result = await call(replica.client)
            except UpstreamError as exc:
                if exc.status >= 500 and exc.code != "upstream_busy":
                    self.failed(replica)
                else:
                    replica.health.release()  # busy (429, its limit) or the request's fault: not sick
                if not exc.retryable:
                    raise
                last = exc
                if replica is not route.order[-1]:
                    log.info("upstream %s: replica %s failed (%s); trying the next", self.name, replica.url, exc)
                continue
            except BaseException:
                replica.health.release()
                raise
            replica.health.success()
            if replica is not first and route.head:
                replica.index.insert(route.hashes, route.head)
            return Ticket(self, replica, route, _text_blocks(route)), result
        assert last is not None
        raise last

    # ---- active health checks ------------------------------------------------------------------

    async def check(self) -> None:
        """One round of active health checks, every replica at once."""
        await asyncio.gather(*(self._check(r) for r in self.replicas))

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval)
            await self.check()

    async def _check(self, replica: Replica) -> None:
        if replica.health.state == "ejected":
            return  # it waits out its ejection; then a check (or a request) tries it
        timeout = min(PROBE_TIMEOUT_S, self.config.timeout)
        try:
            status = await replica.client.probe(self.config.health_path, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is a failed check
            log.info("upstream %s: health check of %s failed: %s", self.name, replica.url, exc or type(exc).__name__)
            status = 0
        if status == 200:
            replica.health.success()
        else:
            self.failed(replica)


def _text_blocks(route: Route) -> int:
    """The request's length in blocks, a partial last one counted (for usage's token share)."""
    return len(route.hashes) + 1 if route.hashes else 0
