"""A Prometheus histogram that takes many equal observations in one call.

prometheus_client's Histogram has no weighted observe: recording the `count` tokens of one streamed
delta would be `count` observe() calls. This keeps plain per-bucket counts per label set instead,
adds `count` to one bucket in O(log buckets), and renders them as a standard histogram at scrape."""

from __future__ import annotations

import bisect
import math
import threading
from typing import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, num_buckets: int):
        self.buckets = [0] * num_buckets  # per bucket, not cumulative; the last one is +Inf
        self.count = 0
        self.sum = 0.0


class WeightedHistogram(Collector):
    """Histogram `name` with one label; register it on a CollectorRegistry."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self.name = name
        self.documentation = documentation
        self.label = label
        self._bounds = bounds
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()  # callers may be on the event loop and on other threads

    def observe(self, label_value: str, value: float, count: int = 1) -> None:
        """Record `count` observations of `value` each."""
        if count <= 0:
            return
        index = bisect.bisect_left(self._bounds, value)  # first bound >= value: `le` is inclusive
        with self._lock:
            series = self._series.get(label_value)
            if series is None:
                series = self._series[label_value] = _Series(len(self._bounds) + 1)
            series.buckets[index] += count
            series.count += count
            series.sum += value * count

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            snapshot = [(label, list(s.buckets), s.sum) for label, s in self._series.items()]
        for label_value, counts, total in snapshot:
            cumulative, buckets = 0, []
            for bound, n in zip([*self._bounds, math.inf], counts):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([label_value], buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        # lets the registry check for name clashes at register() without collecting
        yield HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
