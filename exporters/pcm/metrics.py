"""The deadline metrics, computed from the store at each scrape (a prometheus ``Collector``).

Reports of a Brasília day are due at the PCM by 08:00 the next day. The sender process
(``ofsre pcm send --metrics-port``) exposes, from the store itself, so every figure is true
whichever process captured or sent the reports:

* ``ofsre_pcm_backlog_reports{kind}`` — reports not yet delivered;
* ``ofsre_pcm_held_reports`` — reports the PCM refused for good, waiting for a fix;
* ``ofsre_pcm_oldest_unsent_age_seconds`` — age of the oldest undelivered report;
* ``ofsre_pcm_deadline_seconds_left`` — time left before the deadline of that report's day
  (today's deadline when nothing is waiting); negative once missed;
* ``ofsre_pcm_day_reports{status}`` — today's reports by PCM result, PENDING and HELD included;
* ``ofsre_pcm_last_delivery_timestamp_seconds``.

The names and help texts come from :mod:`ofsre.instrumentation.semconv` (the alert rule and
the dashboard panel use the same constants).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation.metrics import count_telemetry_error

from .store import KINDS, ReportStore, brasilia_day, deadline_of

__all__ = ["StoreCollector", "deadline_figures", "AT_RISK_S"]

# Less than this left before the deadline while reports still wait: at risk (``ofsre pcm status``, the alert).
AT_RISK_S = 4 * 3600


def deadline_figures(store: ReportStore, now: float | None = None) -> dict[str, Any]:
    """Backlog, oldest unsent age, time left to the deadline and today's counts (status and metrics)."""
    now = time.time() if now is None else now
    backlog = store.backlog()
    oldest = backlog["oldest_unsent_ts"]
    day = brasilia_day(oldest) if oldest is not None else brasilia_day(now)
    today = brasilia_day(now)
    return {
        "now": now, "today": today, "unsent": backlog["unsent"], "held": backlog["held"],
        "oldest_unsent_ts": oldest,
        "oldest_unsent_age_s": max(0.0, now - oldest) if oldest is not None else 0.0,
        "deadline_day": day, "deadline_ts": deadline_of(day), "seconds_left": deadline_of(day) - now,
        "last_delivery_ts": backlog["last_delivery_ts"], "day_counts": store.day_status_counts(today),
    }


class StoreCollector(Collector):
    """The deadline metrics of ``store``, registered in ``registry`` (``StoreCollector(store)``: the global
    one).

    A scrape that cannot read the store yields none of them and counts
    ``ofsre_telemetry_errors_total{component="pcm"}`` in the same ``registry``.
    ``registry=None`` registers nothing (and the errors are counted in no registry).
    """

    def __init__(self, store: ReportStore, clock: Callable[[], float] = time.time, *,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.store, self.clock, self.registry = store, clock, registry
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Metric]:  # no scrape at registration: describing touches no disk
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            f = deadline_figures(self.store, self.clock())
        except Exception:  # noqa: BLE001 - a locked or damaged store must not break the whole scrape
            count_telemetry_error("pcm", self.registry)
            return
        yield from self._families(f)

    def _families(self, f: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(semconv.PCM_BACKLOG.name, semconv.PCM_BACKLOG.doc,
                                    labels=semconv.PCM_BACKLOG.labels)
        for kind in KINDS:
            backlog.add_metric([kind], f["unsent"][kind])
        yield backlog
        yield GaugeMetricFamily(semconv.PCM_HELD_REPORTS.name, semconv.PCM_HELD_REPORTS.doc, value=f["held"])
        yield GaugeMetricFamily(semconv.PCM_OLDEST_UNSENT_AGE.name, semconv.PCM_OLDEST_UNSENT_AGE.doc,
                                value=f["oldest_unsent_age_s"])
        yield GaugeMetricFamily(semconv.PCM_DEADLINE_SECONDS_LEFT.name, semconv.PCM_DEADLINE_SECONDS_LEFT.doc,
                                value=f["seconds_left"])
        day = GaugeMetricFamily(semconv.PCM_DAY_REPORTS.name, semconv.PCM_DAY_REPORTS.doc,
                                labels=semconv.PCM_DAY_REPORTS.labels)
        for status, count in f["day_counts"].items():
            day.add_metric([status], count)
        yield day
        yield GaugeMetricFamily(semconv.PCM_LAST_DELIVERY.name, semconv.PCM_LAST_DELIVERY.doc,
                                value=f["last_delivery_ts"] or 0.0)
