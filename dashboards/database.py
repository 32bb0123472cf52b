"""Database: query latency by operation and the connection pool in use against its size."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv as sc

from ._lib import Board, q, ts

KEY = "database"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "service"))
    dur = sc.DB_QUERY_DURATION.name
    b.add(
        ts("Query latency p95 by operation",
           [q(f"histogram_quantile(0.95, sum by (service, operation, le) ({b.rate(dur + '_bucket')}))",
              "{{service}} {{operation}}")], "s", width=12),
        ts("Queries per second by operation",
           [q(f"sum by (service, operation) ({b.rate(dur + '_count')})", "{{service}} {{operation}}")], "ops",
           width=12),
        ts("Pool connections in use vs pool size",
           [q(f"sum by (service) ({sc.DB_POOL_IN_USE.name}{{{b.sel()}}})", "in use {{service}}"),
            q(f"sum by (service) ({sc.DB_POOL_SIZE.name}{{{b.sel()}}})", "size {{service}}")], "short",
            width=24),
    )
    return b.dashboard()
