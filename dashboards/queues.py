"""Queues and workers: publish/consume rates, publish-to-consume latency, processing time,
failures by outcome and dead letters."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv as sc

from ._lib import Board, q, ts

KEY = "queues"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "queue"),
              description="The message queue between payments and the worker.")
    qsel, dead = 'queue=~"$queue"', 'outcome="dead_letter"'
    lat, proc = sc.QUEUE_LATENCY.name + "_bucket", sc.QUEUE_PROCESSING_DURATION.name + "_bucket"
    b.add(
        ts("Published and consumed per second",
           [q(f"sum by (queue) ({b.rate(sc.QUEUE_PUBLISHED.series, qsel)})", "published {{queue}}"),
            q(f"sum by (queue) ({b.rate(sc.QUEUE_CONSUMED.series, qsel)})", "consumed {{queue}}")], "ops",
            width=12),
        ts("Publish-to-consume latency",
           [q(f"histogram_quantile(0.95, sum by (queue, le) ({b.rate(lat, qsel)}))", "p95 {{queue}}"),
            q(f"histogram_quantile(0.5, sum by (queue, le) ({b.rate(lat, qsel)}))", "p50 {{queue}}")], "s",
           key="latency", width=12, thresholds=[("green", None), ("red", cfg.queue_latency_p95_seconds)]),
        ts("Processing time",
           [q(f"histogram_quantile(0.95, sum by (queue, le) ({b.rate(proc, qsel)}))", "p95 {{queue}}"),
            q(f"histogram_quantile(0.5, sum by (queue, le) ({b.rate(proc, qsel)}))", "p50 {{queue}}")], "s",
           width=8),
        ts("Failures by outcome", [q(f"sum by (queue, outcome) ({b.rate(sc.QUEUE_FAILED.series, qsel)})",
                                     "{{queue}} {{outcome}}")], "ops", key="failures", width=8),
        ts("Dead letters", [q(f"sum by (queue) (increase({sc.QUEUE_FAILED.series}{{{b.sel(qsel, dead)}}}"
                              "[$__rate_interval]))", "{{queue}}")], "short", width=8),
    )
    return b.dashboard()
