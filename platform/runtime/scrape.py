"""Read the services' own ``/metrics`` back: scrape, sum over replicas, estimate quantiles.

Used by ``ofsre demo`` for its summary (and handy in tests)::

    samples = scrape(["http://127.0.0.1:8101", "http://127.0.0.1:8102"])
    total(samples, "ofsre_http_server_requests_total", status="201")
    histogram_quantile(0.95, buckets(samples, "ofsre_http_server_request_duration_seconds", route=r))

:func:`histogram_quantile` follows Prometheus' function of the same name: linear
interpolation inside the bucket holding the rank, the highest finite bound when the rank
falls in ``+Inf``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Sample", "scrape", "total", "buckets", "histogram_quantile", "group_by"]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float
    source: str  # the URL it was scraped from


def scrape(urls: Iterable[str], timeout: float = 5.0) -> list[Sample]:
    """Every sample of every URL's ``/metrics`` (a URL that does not answer is skipped)."""
    out: list[Sample] = []
    with httpx.Client(timeout=timeout) as client:
        for url in urls:
            try:
                text = client.get(url.rstrip("/") + "/metrics").text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                out.extend(Sample(s.name, dict(s.labels), s.value, url) for s in family.samples)
    return out


def _matches(sample: Sample, name: str, labels: Mapping[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` carrying ``labels``."""
    return sum(s.value for s in samples if _matches(s, name, labels))


def group_by(samples: Iterable[Sample], name: str, keys: tuple[str, ...],
             **labels: str) -> dict[tuple, float]:
    """``sum by (keys)`` over the samples called ``name`` carrying ``labels``."""
    out: dict[tuple, float] = {}
    for s in samples:
        if _matches(s, name, labels):
            key = tuple(s.labels.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + s.value
    return out


def buckets(samples: Iterable[Sample], histogram: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram, summed over replicas and other labels."""
    sums: dict[float, float] = {}
    for s in samples:
        if _matches(s, histogram + "_bucket", labels):
            le = float(s.labels["le"])
            sums[le] = sums.get(le, 0.0) + s.value
    return sorted(sums.items())


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile estimated from cumulative buckets; None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    count = cumulative[-1][1]
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for le, c in cumulative:
        if c >= rank:
            if math.isinf(le):  # beyond the last finite bucket: its bound is all we know
                return lower_bound
            if c == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (c - lower_count)
        lower_bound, lower_count = le, c
    return lower_bound
