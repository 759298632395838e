"""Per-request results and per-level summaries: TTFT, inter-token latency, throughput."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default); None for an empty list."""
    if not 0 <= p <= 100:
        raise ValueError("p must be within [0, 100]")
    if not values:
        return None
    xs = sorted(values)
    rank = (len(xs) - 1) * p / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


@dataclass
class RequestResult:
    """One request. Times are seconds on one monotonic clock; `token_times` are the arrival
    times of the chunks that carried output text."""

    start: float
    end: float | None = None
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int | None = None  # from the usage chunk
    accepted_prediction_tokens: int = 0  # from the usage chunk's completion_tokens_details
    rejected_prediction_tokens: int = 0
    text: list[str] = field(default_factory=list)  # the content deltas
    index: int = -1  # the request's number in its level (prompt and seed follow from it)
    error: str | None = None  # a coarse kind ("HTTP 503", "timeout", ...) counted per level
    detail: str | None = None  # the specifics, for the first example of each kind

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def inter_token_latencies(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def streaming_span(self) -> tuple[int, float] | None:
        """(tokens after the first, seconds from the first text chunk to the last): the stream's
        own generation rate, without its wait and prefill; None for fewer than two chunks."""
        if len(self.token_times) < 2:
            return None
        return self.output_tokens - 1, self.token_times[-1] - self.token_times[0]

    @property
    def output_tokens(self) -> int:
        """The usage chunk's count; without one (a server that ignores include_usage), the
        number of text chunks."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.token_times)


def ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


@dataclass
class LevelStats:
    server: str  # "A" or "B"
    concurrency: int
    requests: int  # asked for
    completed: int
    errors: int
    not_run: int  # never started before the level's timeout
    wall_s: float
    output_tokens: int
    ttft_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    error_kinds: dict[str, int]
    error_examples: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    outputs: dict[int, str] = field(default_factory=dict, repr=False)  # request index -> content
    stream_tokens_per_s: float | None = None  # per stream, after its first token (streaming_span)

    @property
    def requests_per_s(self) -> float | None:
        return self.completed / self.wall_s if self.wall_s > 0 else None

    @property
    def output_tokens_per_s(self) -> float | None:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else None

    def to_json(self) -> dict:
        return {
            "server": self.server, "concurrency": self.concurrency, "requests": self.requests,
            "completed": self.completed, "errors": self.errors, "not_run": self.not_run,
            "timed_out": self.timed_out, "wall_s": self.wall_s,
            "requests_per_s": self.requests_per_s, "output_tokens": self.output_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "ttft_ms": self.ttft_ms, "itl_ms": self.itl_ms, "error_kinds": self.error_kinds,
            "error_examples": self.error_examples,
            "stream_tokens_per_s": self.stream_tokens_per_s,
            "accepted_prediction_tokens": self.accepted_prediction_tokens,
            "rejected_prediction_tokens": self.rejected_prediction_tokens,
        }


def summarize(server: str, concurrency: int, requests: int, results: Iterable[RequestResult],
              wall_s: float, *, timed_out: bool = False) -> LevelStats:
    """A level's summary. Latencies and tokens come from the successful requests only; `wall_s`
    is the level's wall-clock time, the denominator of both rates."""
    results = list(results)
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    ttfts = [t for r in good if (t := r.ttft) is not None]
    itls = [x for r in good for x in r.inter_token_latencies]
    spans = [span for r in good if (span := r.streaming_span) is not None]
    span_s = sum(seconds for _, seconds in spans)
    return LevelStats(
        server=server, concurrency=concurrency, requests=requests,
        completed=len(good), errors=len(bad), not_run=max(0, requests - len(results)),
        wall_s=wall_s, output_tokens=sum(r.output_tokens for r in good),
        ttft_ms={f"p{p}": ms(percentile(ttfts, p)) for p in (50, 90, 99)},
        itl_ms={f"p{p}": ms(percentile(itls, p)) for p in (50, 99)},
        error_kinds=dict(Counter(r.error for r in bad if r.error)),
        error_examples=_examples(bad),
        timed_out=timed_out,
        accepted_prediction_tokens=sum(r.accepted_prediction_tokens for r in good),
        rejected_prediction_tokens=sum(r.rejected_prediction_tokens for r in good),
        outputs={r.index: "".join(r.text) for r in good},
        stream_tokens_per_s=sum(tokens for tokens, _ in spans) / span_s if span_s > 0 else None,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def _examples(bad: list[RequestResult]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in bad:
        if r.error and r.error not in out:
            out[r.error] = r.detail or r.error
    return out
