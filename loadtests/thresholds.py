"""Pass/fail thresholds of a load test, read from the endpoint catalog (k6-style).

Nothing here imports locust: the verifier, the CLI and the tests use it on plain numbers.

What a run must hold, each rule from ``instrumentation/catalog.toml``:

* **per-route p95 under the tier's limit** (``[tiers.*] p95_ms``; the regulator measures the p95
  per endpoint, openfinance.md §1), judged only for routes with at least ``min_samples`` answers;
* **error rate** at most ``1 - slo.availability_objective`` (0.5 % with the bundled catalog);
* **429 only where a TPM limit was really exceeded**: the suite counts its own calls per origin,
  endpoint and clock minute (:class:`TpmLedger`); a 429 the ledger cannot justify is an error;
* **423 is a consent's monthly operational limit** (openfinance.md §3): the personas keep
  their own count and change consent before it, so a 423 is reported, not an error;
* **529 is the platform's capacity answer** (``ecosystem.capacity_status``): reported as
  *capacity reached*, never as an error, and excluded from latency like the regulator does.

Statistics are named by route template, with a suffix for the answers that must not mix
with the route's latency (:data:`CAPACITY_SUFFIX`, :data:`TPM_SUFFIX`)::

    from ofsre.loadtests.thresholds import RouteStats, Thresholds, evaluate

    outcome = evaluate([RouteStats("GET", "/open-banking/accounts/v2/accounts", 900, 2, 180.0)])
    outcome.passed, outcome.violations      # (True, [])
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from ofsre.instrumentation.catalog import Catalog, load_catalog

__all__ = ["CAPACITY_SUFFIX", "TPM_SUFFIX", "MONTHLY_SUFFIX", "RouteStats", "Thresholds", "Outcome",
           "TpmLedger", "evaluate", "base_name", "THRESHOLD_EXIT_CODE"]

CAPACITY_SUFFIX = " [529 capacity]"  # answered 529: the platform said it is at capacity
TPM_SUFFIX = " [429 TPM]"            # answered 429 after the suite really exceeded the TPM limit
MONTHLY_SUFFIX = " [423 monthly limit]"  # the consent's monthly operational limit is used up
THRESHOLD_EXIT_CODE = 99             # k6's exit code for a crossed threshold


def base_name(name: str) -> str:
    """The route template of a statistics name (the suffixes removed)."""
    for suffix in (CAPACITY_SUFFIX, TPM_SUFFIX, MONTHLY_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class RouteStats:
    """One row of the client's statistics: a method and a name (route template, maybe suffixed)."""

    method: str
    name: str
    requests: int
    failures: int
    p95_ms: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """The bounds a run is judged by; ``None`` fields come from the catalog."""

    max_error_rate: float | None = None   # default: 1 - slo.availability_objective
    min_samples: int = 20                 # fewer answers than this: the route's p95 is not judged
    p95_scale: float = 1.0                # < 1 for a safety margin, e.g. 0.8 = 80 % of the limit

    def error_budget(self, catalog: Catalog) -> float:
        if self.max_error_rate is not None:
            return self.max_error_rate
        return round(1.0 - catalog.slo.availability_objective, 6)


@dataclass
class Outcome:
    """The judgement of one run: violations (empty = pass) and what was observed."""

    violations: list[str] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    error_rate: float = 0.0
    error_budget: float = 0.0
    capacity_answers: int = 0     # 529
    tpm_answers: int = 0          # justified 429
    monthly_limit_answers: int = 0  # 423: a consent's monthly operational limit used up
    routes: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"passed": self.passed, "violations": list(self.violations), "requests": self.requests,
                "failures": self.failures, "error_rate": self.error_rate, "error_budget": self.error_budget,
                "capacity_answers": self.capacity_answers, "tpm_answers": self.tpm_answers,
                "monthly_limit_answers": self.monthly_limit_answers, "routes": self.routes}


def evaluate(rows: Iterable[RouteStats], catalog: Catalog | None = None,
             thresholds: Thresholds | None = None) -> Outcome:
    """Judge a run's statistics against the catalog's limits (see the module docstring)."""
    catalog = catalog or load_catalog()
    thresholds = thresholds or Thresholds()
    out = Outcome(error_budget=thresholds.error_budget(catalog))
    for row in rows:
        out.requests += row.requests
        out.failures += row.failures
        if row.name.endswith(CAPACITY_SUFFIX):
            out.capacity_answers += row.requests
            continue
        if row.name.endswith(TPM_SUFFIX):
            out.tpm_answers += row.requests
            continue
        if row.name.endswith(MONTHLY_SUFFIX):
            out.monthly_limit_answers += row.requests
            continue
        entry = catalog.lookup(row.method, row.name)
        if entry is None or entry.slo_excluded:
            continue  # simulated authorisation, probes: no regulatory limit
        limit_ms = entry.p95_ms * thresholds.p95_scale
        judged = row.p95_ms is not None and row.requests - row.failures >= thresholds.min_samples
        ok = not judged or (row.p95_ms is not None and row.p95_ms <= limit_ms)
        out.routes.append({"method": row.method, "route": row.name, "tier": entry.tier.name,
                           "requests": row.requests, "failures": row.failures, "p95_ms": row.p95_ms,
                           "limit_ms": limit_ms, "judged": judged, "ok": ok})
        if not ok:
            out.violations.append(f"p95 of {row.method} {row.name} is {row.p95_ms:.0f} ms, over the "
                                  f"{entry.tier.name} limit of {limit_ms:.0f} ms")
    # 529 and justified 429 answers are not errors (the suite marks them successful).
    counted = out.requests
    out.error_rate = out.failures / counted if counted else 0.0
    if out.error_rate > out.error_budget:
        out.violations.append(f"error rate {100 * out.error_rate:.2f} % ({out.failures} of {counted}) "
                              f"is over the budget of {100 * out.error_budget:.2f} %")
    if out.requests == 0:
        out.violations.append("no request was made")
    return out


class TpmLedger:
    """The suite's own count of calls per (origin, endpoint) in each clock minute.

    It mirrors the gateway's fixed-window counter (openfinance.md §3: :00.000–:59.999), so a
    429 can be checked: it is justified when this process had sent more than the endpoint's
    limit in the minute of the call (the minute it was sent or the one it was answered in, a
    call can straddle the boundary). Memory: the keys of the current and previous minutes only.
    With several load-generator processes sharing one origin each sees part of the traffic, so
    an unjustified 429 there can be a false alarm: give each process its own institutions.
    """

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or load_catalog()
        self._minute = -1
        self._counts: dict[Hashable, int] = {}
        self._previous: dict[Hashable, int] = {}

    def _roll(self, minute: int) -> None:
        if minute != self._minute:
            self._previous = self._counts if minute == self._minute + 1 else {}
            self._counts, self._minute = {}, minute

    def count(self, origin: str, method: str, route: str, now: float) -> int:
        """Count one call sent at ``now`` (unix seconds); the minute's count so far."""
        if self.catalog.lookup(method, route) is None:
            return 0
        minute = int(now // 60)
        self._roll(minute)
        key = (origin, method, route)
        self._counts[key] = n = self._counts.get(key, 0) + 1
        return n

    def justified(self, origin: str, method: str, route: str, sent_count: int, sent_at: float) -> bool:
        """Whether a 429 to a call counted ``sent_count``-th in its minute, sent at ``sent_at``, is
        what the limit says. Within 2 s after a minute starts the previous minute's count is also
        accepted (the server's clock may still be in it)."""
        entry = self.catalog.lookup(method, route)
        if entry is None or entry.tpm is None:
            return False  # no TPM limit: a 429 is never justified
        if sent_count > entry.tpm:
            return True
        previous = self._previous.get((origin, method, route), 0) if int(sent_at // 60) == self._minute else 0
        return sent_at % 60 < 2.0 and previous > entry.tpm
