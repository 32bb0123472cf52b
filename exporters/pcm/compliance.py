"""What the regulator will compute from our PCM reports — before it does (``ofsre pcm report``).

Per endpoint and major version (the report's ``endpoint`` template carries the ``/vN/``) and
HTTP method (the catalog's key for the tier), for one Brasília day:

**Latency** (openfinance.md §1, CF-801996803)
    drop ``processTimespan`` ≤ 0, reports the PCM classified ``PAIRED_INCONSISTENT`` or
    ``DISCARDED``, and HTTP 423/429/529; webhooks are excluded. ``p95 = r(round(0.95·n))``:
    the value of rank ``round(0.95·n)`` (half up, at least 1) in ascending order. The day
    passes when ``p95 ≤`` its tier's limit (from the catalog). A *month* passes when the
    limit holds on ≥ 90 % of its days with traffic **and** no day exceeds 1.2 × the limit;
    the report shows the month to date.

**Availability** (§2, CF-795017220)
    1-minute buckets in Brasília time; counted statuses 2xx, 5xx, 408, 422; success = 2xx or
    422, error = 5xx or 408. A minute is available when ≥ 95 % of its counted calls succeed.
    The day's availability is available minutes / minutes with counted traffic (the reading
    the regulator's example suggests; ``availability_all_minutes`` also shows the figure
    over all 1,440 minutes, minutes without traffic counted as available) and passes at
    ≥ 95 % (the catalog's ``availability_daily_objective``).

Every comparison at a threshold is exact (integers and fractions, never floats), so a
minute at exactly 95 % is available and a p95 exactly at the limit passes.

Whose view: the regulator uses the *consumer's* reports. For the calls we serve we only
have our SERVER reports, so by default the figures are computed from those (``role``
``SERVER``; ``CLIENT`` gives the figures of the institutions we call, as we see them).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from ofsre.instrumentation.catalog import Catalog, load_catalog

from .store import BRT, ReportStore, Row

__all__ = ["EndpointFigures", "DayReport", "compute_day", "p95", "day_report", "render_table", "render_csv",
           "render_json", "LATENCY_EXCLUDED_STATUSES", "LATENCY_EXCLUDED_RESULTS"]

LATENCY_EXCLUDED_STATUSES = frozenset({423, 429, 529})
LATENCY_EXCLUDED_RESULTS = frozenset({"PAIRED_INCONSISTENT", "DISCARDED"})
MONTH_DAYS_FRACTION = Fraction(9, 10)   # the limit must hold on >= 90 % of days with traffic
MONTH_MAX_FACTOR = Fraction(6, 5)       # and no day may exceed 1.2 x the limit
MINUTE_OBJECTIVE = Fraction(95, 100)    # a minute is available at >= 95 % successes
_MAJOR = re.compile(r"/v(\d+)(?:/|$)")
_OFFSET_S = int(BRT.utcoffset(None).total_seconds())


def p95(values: Iterable[int]) -> int | None:
    """``r(round(0.95·n))``: rank round-half-up(0.95·n), 1-based, of the sorted values; None for none."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    rank = max(1, min(n, (95 * n + 50) // 100))
    return ordered[rank - 1]


def counted(status: int) -> bool:
    return 200 <= status < 300 or status >= 500 or status in (408, 422)


def success(status: int) -> bool:
    return 200 <= status < 300 or status == 422


def major_version(endpoint: str) -> str:
    found = _MAJOR.search(endpoint)
    return f"v{found.group(1)}" if found else ""


def brasilia_minute(ts: float) -> int:
    """Minute of the Brasília day (0..1439) of a unix time."""
    return int((ts + _OFFSET_S) // 60) % 1440


@dataclass
class EndpointFigures:
    endpoint: str
    method: str
    major_version: str
    api: str
    tier: str
    limit_ms: int | None
    calls: int = 0
    latency_samples: int = 0
    p95_ms: int | None = None
    latency_ok: bool | None = None
    over_1_2x: bool | None = None
    month_days_with_traffic: int = 0
    month_days_ok: int = 0
    month_any_over_1_2x: bool = False
    month_ok: bool | None = None
    counted_calls: int = 0
    successes: int = 0
    errors: int = 0
    minutes_with_traffic: int = 0
    available_minutes: int = 0
    availability: float | None = None
    availability_all_minutes: float | None = None
    availability_ok: bool | None = None
    unavailable_minutes: list[str] = field(default_factory=list)


@dataclass
class DayReport:
    day: str
    role: str
    endpoints: list[EndpointFigures]

    @property
    def compliant(self) -> bool:
        return all(e.latency_ok is not False and e.availability_ok is not False for e in self.endpoints)


def _latency_values(rows: list[Row]) -> list[int]:
    return [r.process_ms for r in rows if r.process_ms > 0 and r.status_code not in LATENCY_EXCLUDED_STATUSES
            and r.result not in LATENCY_EXCLUDED_RESULTS]


def compute_day(rows: Iterable[Row], catalog: Catalog | None = None, *, day: str = "", role: str = "SERVER",
                month_rows: dict[str, list[Row]] | None = None) -> DayReport:
    """The figures of one day's reports; ``month_rows`` (day → rows, earlier days of the month) for the month
    rule."""
    catalog = catalog or load_catalog()
    by_key: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_key[(row.endpoint, row.method)].append(row)
    month_by_key: dict[tuple[str, str], dict[str, list[Row]]] = defaultdict(dict)
    for other_day, other_rows in (month_rows or {}).items():
        grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for row in other_rows:
            grouped[(row.endpoint, row.method)].append(row)
        for key, group in grouped.items():
            month_by_key[key][other_day] = group
    figures = [_endpoint(key, group, catalog,
                         month_by_key.get(key, {})) for key, group in sorted(by_key.items())]
    return DayReport(day, role, figures)


def _endpoint(key: tuple[str, str], rows: list[Row], catalog: Catalog,
              month: dict[str, list[Row]]) -> EndpointFigures:
    endpoint, method = key
    entry = catalog.lookup(method, endpoint)
    limit = entry.p95_ms if entry is not None else None
    f = EndpointFigures(endpoint, method, major_version(endpoint), entry.api if entry else "",
                        entry.tier.name if entry else "", limit, calls=len(rows))
    excluded = entry is not None and entry.slo_excluded   # webhooks: no latency figure
    if not excluded:
        values = _latency_values(rows)
        f.latency_samples = len(values)
        f.p95_ms = p95(values)
        if f.p95_ms is not None and limit is not None:
            f.latency_ok = f.p95_ms <= limit
            f.over_1_2x = f.p95_ms > MONTH_MAX_FACTOR * limit
        if limit is not None:
            days = [p for p in (p95(_latency_values(r)) for r in month.values()) if p is not None]
            if f.p95_ms is not None:
                days.append(f.p95_ms)
            f.month_days_with_traffic = len(days)
            f.month_days_ok = sum(1 for p in days if p <= limit)
            f.month_any_over_1_2x = any(p > MONTH_MAX_FACTOR * limit for p in days)
            if days:
                f.month_ok = (Fraction(f.month_days_ok, len(days)) >= MONTH_DAYS_FRACTION
                              and not f.month_any_over_1_2x)
    _availability(f, rows, catalog)
    return f


def _availability(f: EndpointFigures, rows: list[Row], catalog: Catalog) -> None:
    minutes: dict[int, list[int]] = defaultdict(lambda: [0, 0])   # minute → [counted, successes]
    for row in rows:
        if counted(row.status_code):
            bucket = minutes[brasilia_minute(row.ts)]
            bucket[0] += 1
            if success(row.status_code):
                bucket[1] += 1
    f.counted_calls = sum(c for c, _ in minutes.values())
    f.successes = sum(s for _, s in minutes.values())
    f.errors = f.counted_calls - f.successes
    f.minutes_with_traffic = len(minutes)
    unavailable = sorted(m for m, (c, s) in minutes.items() if Fraction(s, c) < MINUTE_OBJECTIVE)
    f.available_minutes = f.minutes_with_traffic - len(unavailable)
    f.unavailable_minutes = [f"{m // 60:02d}:{m % 60:02d}" for m in unavailable]
    if f.minutes_with_traffic:
        share = Fraction(f.available_minutes, f.minutes_with_traffic)
        f.availability = float(share)
        f.availability_all_minutes = float(Fraction(1440 - len(unavailable), 1440))
        f.availability_ok = share >= Fraction(str(catalog.slo.availability_daily_objective))


def day_report(store: ReportStore, day: str, *, role: str = "SERVER",
               catalog: Catalog | None = None) -> DayReport:
    """The report of ``day`` (YYYY-MM-DD, Brasília) from the store, with the month to date."""
    target = date.fromisoformat(day)
    earlier = [(target.replace(day=1) + timedelta(days=i)).isoformat() for i in range(target.day - 1)]
    month_rows: dict[str, list[Row]] = defaultdict(list)
    if earlier:
        for row in store.rows(earlier, role):
            month_rows[_day_of(row)].append(row)
    return compute_day(store.rows([day], role), catalog, day=day, role=role, month_rows=month_rows)


def _day_of(row: Row) -> str:
    from .store import brasilia_day

    return brasilia_day(row.ts)


# --- rendering ------------------------------------------------------------------------------------

_CSV_FIELDS = ([n for n in EndpointFigures.__dataclass_fields__ if n != "unavailable_minutes"]
               + ["unavailable_minutes"])


def render_json(report: DayReport) -> str:
    return json.dumps({"day": report.day, "role": report.role, "compliant": report.compliant,
                       "endpoints": [asdict(e) for e in report.endpoints]}, indent=2)


def render_csv(report: DayReport) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["day", "role", *_CSV_FIELDS], lineterminator="\n")
    writer.writeheader()
    for e in report.endpoints:
        row: dict[str, Any] = {"day": report.day, "role": report.role, **asdict(e)}
        row["unavailable_minutes"] = " ".join(e.unavailable_minutes)
        writer.writerow(row)
    return out.getvalue()


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "FAIL")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def render_table(report: DayReport) -> str:
    header = ("endpoint", "method", "ver", "tier", "limit", "n", "p95", "lat", ">1.2x", "month", "minutes",
              "avail", "avail ok")
    lines = [header]
    for e in report.endpoints:
        month = "-" if e.month_ok is None else (f"{e.month_days_ok}/{e.month_days_with_traffic} "
                                                f"{_mark(e.month_ok)}")
        lines.append((e.endpoint, e.method, e.major_version, e.tier or "?",
                      "-" if e.limit_ms is None else str(e.limit_ms),
                      str(e.latency_samples), "-" if e.p95_ms is None else str(e.p95_ms), _mark(e.latency_ok),
                      "-" if e.over_1_2x is None else ("YES" if e.over_1_2x else "no"), month,
                      f"{e.available_minutes}/{e.minutes_with_traffic}", _pct(e.availability),
                      _mark(e.availability_ok)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = [f"PCM compliance for {report.day} (Brasília), from {report.role} reports"]
    for i, row in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    if not report.endpoints:
        text.append("(no reports for this day)")
    text.append(f"verdict: {'compliant' if report.compliant else 'NOT compliant'}  (limits in "
                f"ms; month = days within the limit / days with traffic, month to date)")
    return "\n".join(text) + "\n"
