"""Which replica takes a request, and which are tried after it.

`prefix` (the default for several replicas), per request, before the first byte:

1. The load guard. When the replicas' in-flight requests differ by more than
   `balance_abs_threshold` and the busiest has more than `balance_rel_threshold` times the
   idlest's, the least loaded replica takes it, whatever the caches hold: one hot prefix must
   not pile a whole workload onto one server.
2. The prefix. Among the replicas that served this conversation before (its head, through the
   first user turn, is in their index), the one whose recent traffic shares the longest prefix
   with it (prefix_index.py), when that covers at least `cache_threshold` of it.
3. Otherwise the conversation's home: rendezvous hashing of its stable head (through the first
   user turn; or of its system prompt and tools alone, when they are long and most of the head,
   so that conversations sharing them share a home) over the replicas, skipping a replica with
   more than BOUNDED_LOAD times the mean load (consistent hashing with bounded loads). Every
   gateway computes the same home, so gateways that share no state still send a conversation's
   turns to one replica.

Ties go by the same rendezvous order. `round_robin` and `least_busy` are the plain policies, for
comparison and for upstreams that have no prefix cache.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rill.upstreams.prefix_index import block_hashes
from rill.upstreams.routing_key import conversation_text

if TYPE_CHECKING:
    from rill.upstreams.replica_set import Replica

BOUNDED_LOAD = 1.25  # a conversation's home is skipped past this many times the mean in-flight load
SHARED_HOME_CHARS = 512  # ~128 tokens: a shared system prompt shorter than this is not worth pinning


@dataclass(slots=True)
class Route:
    order: list[Replica]  # the first takes the request; the others, in turn, if it fails before the first byte
    head: bytes  # the conversation's head_key (prefix routing only)
    hashes: list[bytes]  # the conversation's blocks (prefix routing only)
    matched: dict[int, int]  # replica position -> blocks of the request it holds
    reason: str  # prefix, load, home, round_robin, least_busy, only


class Policy:
    def __init__(self, name: str, *, balance_abs: int, balance_rel: float, cache_threshold: float):
        self.name = name
        self.balance_abs, self.balance_rel, self.cache_threshold = balance_abs, balance_rel, cache_threshold
        self._turn = itertools.count()

    def route(self, body: dict[str, Any], replicas: list[Replica]) -> Route:
        """replicas: those that may take a request now (healthy, or half-open and free)."""
        if len(replicas) == 1:  # one replica, or the only one not ejected: nothing to choose
            return Route(replicas, b"", [], {}, "only")
        if self.name == "round_robin":
            start = next(self._turn) % len(replicas)
            return Route(replicas[start:] + replicas[:start], b"", [], {}, "round_robin")
        if self.name == "least_busy":
            start = next(self._turn) % len(replicas)
            rotated = replicas[start:] + replicas[:start]  # ties taken in turn
            return Route(sorted(rotated, key=_load), b"", [], {}, "least_busy")
        return self._prefix(body, replicas)

    def _prefix(self, body: dict[str, Any], replicas: list[Replica]) -> Route:
        text, head, shared = conversation_text(body)
        hashes = block_hashes(text)
        key = head_key(text[:head])
        home = rendezvous(home_key(text, head, shared), replicas)
        loads = [_load(r) for r in replicas]
        if max(loads) - min(loads) > self.balance_abs and max(loads) > self.balance_rel * min(loads):
            first = min(home, key=_load)
            return Route(_first(first, home), key, hashes, {}, "load")
        # only a replica that served this conversation (its head) counts: one that only shares a
        # system prompt or a document with it would draw every new conversation to itself
        matched = {r.position: r.index.match(hashes) if r.index.has(key) else 0 for r in replicas}
        best = max(home, key=lambda r: matched[r.position])  # max() keeps the first of equals: home order
        if matched[best.position] and matched[best.position] >= self.cache_threshold * len(hashes):
            return Route(_first(best, home), key, hashes, matched, "prefix")
        bound = BOUNDED_LOAD * (sum(loads) + 1) / len(replicas)
        first = next((r for r in home if _load(r) + 1 <= max(1.0, bound)), home[0])
        return Route(_first(first, home), key, hashes, matched, "home")


def head_key(head: str) -> bytes:
    """A conversation's identity: its head (through the first user turn) hashed."""
    return hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=16, person=b"rill-head").digest()


def home_key(text: str, head: int, shared: int) -> bytes:
    """What a conversation's home is hashed on: its head, or, when most of the head is a long
    system prompt and tools (an agent's, a shared instruction), that part alone, so that the
    conversations sharing it share a home (and its cache) on every gateway; the bounded load
    spreads them over the next replicas in its order when one is not enough."""
    if shared >= SHARED_HOME_CHARS and shared * 2 >= head:
        return head_key(text[:shared])
    return head_key(text[:head])


def rendezvous(key: bytes, replicas: list[Replica]) -> list[Replica]:
    """The replicas in the key's rendezvous order (highest random weight, weighted): the same on
    every gateway, and removing a replica moves only the keys that were its own."""
    def score(replica: Replica) -> float:
        h = hashlib.blake2b(key + replica.url.encode(), digest_size=8).digest()
        u = (int.from_bytes(h, "big") + 1) / (2 ** 64 + 2)  # in (0, 1)
        return -replica.weight / math.log(u)

    return sorted(replicas, key=score, reverse=True)


def _load(replica: Replica) -> float:
    return replica.in_flight / replica.weight


def _first(first: Replica, order: list[Replica]) -> list[Replica]:
    return [first, *(r for r in order if r is not first)]
