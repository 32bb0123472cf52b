"""The scaling verdict: did the platform scale horizontally, in time, and hold its SLOs meanwhile?

Pure functions over what the verifier recorded (no locust, no platform, no network), so every
rule is tested on made-up timelines. Inputs:

* **samples** — the scaled workloads once a second, from the local runtime's ``/status`` or the
  Kubernetes API (:mod:`.watchers`): ``{"t": unix, "services": {name: {"current", "desired",
  "ready", "min", "max", "utilization": {"cpu": 93}, "targets": {"cpu": 80}, "limited": bool}}}``;
* **events** — ``{"t", "service", "reason", "message"}``, the HPA's ``SuccessfulRescale`` &c.;
* **rows** — the client's timeline (:mod:`.suite`): per second users, req/s, failures/s, and per
  route req/s, failures/s and p95.

Checks (each with its number, its bound and a sentence), per autoscaled service that scaled:

=========================  ==================================================================
reaction                   first utilisation above target (beyond the tolerance) → first
                           scale-up decision ≤ ``max_reaction_s`` (100 s: Kubernetes' e2e budget)
time to ready              same start → the new replicas ready ≤ ``max_ready_s``
replicas vs formula        peak replicas within ``replica_slack`` of the HPA formula
                           ``min(max, ceil(ready × utilisation / target))`` at the observed peak
SLO during scale-up        per-route p95 under the tier's limit and error rate under the budget
no failures at scale-down  no failed request from the first scale-down to min replicas
back to min                at min replicas by the end (after the stabilisation window)
=========================  ==================================================================

plus ``scaled up`` (an expected service never scaled up fails, with the reason: at max, no
utilisation above target, …), at-max / ``ScalingLimited`` periods, and **scaling efficiency**:
requests/s per ready replica near the target utilisation, and the throughput at N replicas
against N × one replica's (judged only with ``min_efficiency``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ofsre.instrumentation.catalog import Catalog, load_catalog

__all__ = ["Bounds", "Check", "Verdict", "judge", "gate", "SERVICE_APIS"]

# Which API families each module serves (the gateway serves them all).
SERVICE_APIS = {"consents": ("consents", "resources"), "accounts": ("accounts",), "payments": ("payments",),
                "worker": ()}  # the worker serves no API: its scaling is judged on replicas alone
_NEW_SIZE = re.compile(r"New size: (\d+)")


@dataclass(frozen=True)
class Bounds:
    """What the verdict accepts; defaults from Kubernetes' HPA e2e budget (autoscaling-and-load.md)."""

    max_reaction_s: float = 100.0
    max_ready_s: float = 160.0
    replica_slack: int = 1
    tolerance: float = 0.1
    max_error_rate: float | None = None     # default: 1 - the catalog's availability objective
    min_efficiency: float | None = None     # throughput(N) / (N × throughput(1)); None: reported only
    expect_scale: tuple[str, ...] = ()      # services that must scale up (empty: at least one)


@dataclass
class Check:
    name: str
    service: str
    passed: bool | None          # None: not observed / reported only
    value: Any = None
    bound: Any = None
    detail: str = ""


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    services: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "services": self.services,
                "failed": [f"{c.service}: {c.name}: {c.detail}" for c in self.failed]}

    def table(self) -> str:
        """The verdict as a terminal table."""
        lines = [f"{'service':<10} {'check':<26} {'result':<7} {'value':>12} {'bound':>10}  detail"]
        for c in self.checks:
            result = {True: "pass", False: "FAIL", None: "info"}[c.passed]
            lines.append(f"{c.service:<10} {c.name:<26} {result:<7} {_fmt(c.value):>12} {_fmt(c.bound):>10}"
                         f"  {c.detail}")
        failed = "; ".join(f"{c.service} {c.name}" for c in self.failed)
        lines.append("verdict: PASS" if self.passed else f"verdict: FAIL — {failed}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


# --------------------------------------------------------------------------- helpers

def _ratio(svc: Mapping[str, Any]) -> float:
    """The highest utilisation / target over the service's metrics (0 when none)."""
    best = 0.0
    for res, target in (svc.get("targets") or {}).items():
        util = (svc.get("utilization") or {}).get(res)
        if util is not None and target:
            best = max(best, float(util) / float(target))
    return best


def _series(samples: Sequence[Mapping], name: str) -> list[tuple[float, Mapping]]:
    return [(s["t"], s["services"][name]) for s in samples if name in s.get("services", {})]


def _at(series: list[tuple[float, Mapping]], t: float) -> Mapping | None:
    """The last sample at or before ``t``."""
    found = None
    for ts, svc in series:
        if ts > t:
            break
        found = svc
    return found


def _rescales(events: Iterable[Mapping], series: list[tuple[float, Mapping]], name: str) -> list[dict]:
    out = []
    for e in events:
        if e.get("service") != name or e.get("reason") != "SuccessfulRescale":
            continue
        m = _NEW_SIZE.search(e.get("message", ""))
        if not m:
            continue
        before = _at(series, e["t"] - 1e-6) or (series[0][1] if series else {})
        size = int(m.group(1))
        out.append({"t": e["t"], "size": size, "from": before.get("current"),
                    "up": before.get("current") is None or size > int(before.get("current", 0))})
    return sorted(out, key=lambda r: r["t"])


def _window(rows: Sequence[Mapping], start: float, end: float) -> list[Mapping]:
    return [r for r in rows if start <= r["t"] <= end]


def _routes_of(service: str, catalog: Catalog) -> set[tuple[str, str]] | None:
    apis = SERVICE_APIS.get(service)
    if apis is None:
        return None  # the gateway (or an unknown service): every route
    return {(e.method, e.route) for e in catalog if e.api in apis}


def _service_rps(row: Mapping, routes: set[tuple[str, str]] | None) -> float:
    if routes is None:
        return float(row.get("rps", 0.0))
    total = 0.0
    for key, r in (row.get("routes") or {}).items():
        method, _, name = key.partition(" ")
        if (method, name.split(" [", 1)[0]) in routes:
            total += float(r.get("rps", 0.0))
    return total


# --------------------------------------------------------------------------- the verdict

def judge(samples: Sequence[Mapping], events: Sequence[Mapping], rows: Sequence[Mapping], *,
          bounds: Bounds | None = None, catalog: Catalog | None = None) -> Verdict:
    """The verdict over one run (see the module docstring)."""
    bounds = bounds or Bounds()
    catalog = catalog or load_catalog()
    budget = (bounds.max_error_rate if bounds.max_error_rate is not None
              else 1 - catalog.slo.availability_objective)
    verdict = Verdict()
    names = sorted({n for s in samples for n in s.get("services", {})})
    scaled_any = False
    for name in names:
        series = _series(samples, name)
        rescales = _rescales(events, series, name)
        ups = [r for r in rescales if r["up"]]
        downs = [r for r in rescales if not r["up"]]
        info: dict[str, Any] = {"scale_ups": len(ups), "scale_downs": len(downs)}
        verdict.services[name] = info
        first, last = series[0][1], series[-1][1]
        info.update(min=first.get("min"), max=first.get("max"),
                    peak=max(int(s.get("ready") or 0) for _, s in series))
        info["at_max"] = _at_max_periods(series)
        if info["at_max"]:
            verdict.checks.append(Check("at max / ScalingLimited", name, None,
                                        round(sum(p["seconds"] for p in info["at_max"]), 1), None,
                                        f"{len(info['at_max'])} period(s) at maxReplicas {first.get('max')}"))
        if not ups:
            if name in bounds.expect_scale:
                verdict.checks.append(Check("scaled up", name, False, 0, ">= 1", _why_not(series, bounds)))
            continue
        scaled_any = True
        up = ups[0]
        crossing = next((t for t, s in series if _ratio(s) > 1 + bounds.tolerance and t <= up["t"] + 1e-6),
                        up["t"])
        reaction = max(0.0, up["t"] - crossing)
        info.update(crossing_t=crossing, decision_t=up["t"], reaction_s=round(reaction, 1))
        verdict.checks.append(Check("scaled up", name, True, len(ups), ">= 1",
                                    f"{up['from']} → {up['size']} replicas, then {len(ups) - 1} more "
                                    "scale-up(s)"))
        verdict.checks.append(Check("reaction", name, reaction <= bounds.max_reaction_s, round(reaction, 1),
                                    bounds.max_reaction_s, "s from utilisation above target to the decision"))
        # Ready: as many as decided, or as the HPA still wants if it lowered its target meanwhile.
        ready_t = next((t for t, s in series
                        if t >= up["t"] and int(s.get("ready") or 0) > int(up["from"] or 0)
                        and int(s.get("ready") or 0) >= min(up["size"], int(s.get("current") or 0))), None)
        if ready_t is None:
            verdict.checks.append(Check("time to ready", name, False, None, bounds.max_ready_s,
                                        f"the {up['size']} replicas never became ready"))
            ready_t = series[-1][0]
        else:
            to_ready = ready_t - crossing
            info["ready_s"] = round(to_ready, 1)
            verdict.checks.append(Check("time to ready", name, to_ready <= bounds.max_ready_s,
                                        round(to_ready, 1),
                                        bounds.max_ready_s, f"s until {up['size']} replicas were ready"))
        verdict.checks.append(_formula_check(name, series, ups, bounds))
        verdict.checks.extend(_slo_checks(name, _window(rows, crossing, ready_t), catalog, budget))
        verdict.checks.append(_scale_down_check(name, series, downs, rows))
        at_min = int(last.get("current") or 0) <= int(last.get("min") or 1)
        verdict.checks.append(Check("back to min", name, at_min, last.get("current"), last.get("min"),
                                    "replicas at the end" if at_min else
                                    f"still {last.get('current')} replicas (min {last.get('min')}) "
                                    "at the end"))
        verdict.checks.append(_efficiency_check(name, series, rows, catalog, bounds, info))
    if not scaled_any and not bounds.expect_scale:
        reasons = ("; ".join(f"{n}: {_why_not(_series(samples, n), bounds)}" for n in names)
                   or "no workload observed")
        verdict.checks.append(Check("scaled up", "any", False, 0, ">= 1", reasons))
    return verdict


def _why_not(series: list[tuple[float, Mapping]], bounds: Bounds) -> str:
    if not series:
        return "never observed"
    peak_ratio = max(_ratio(s) for _, s in series)
    svc = series[-1][1]
    if int(svc.get("max") or 0) <= int(svc.get("current") or 0):
        return (f"maxReplicas is {svc.get('max')}: already at max with utilisation up to "
                f"{100 * peak_ratio:.0f} % of target (ScalingLimited TooManyReplicas)")
    if peak_ratio <= 1 + bounds.tolerance:
        return (f"utilisation never went above target beyond the tolerance "
                f"(peak {100 * peak_ratio:.0f} % of target)")
    return f"utilisation reached {100 * peak_ratio:.0f} % of target but no scale-up was decided"


def _at_max_periods(series: list[tuple[float, Mapping]]) -> list[dict]:
    periods, start = [], None
    for t, s in series:
        at_max = bool(s.get("limited")) or int(s.get("current") or 0) >= int(s.get("max") or 10**9)
        if at_max and start is None:
            start = t
        elif not at_max and start is not None:
            periods.append({"start": start, "end": t, "seconds": round(t - start, 1)})
            start = None
    if start is not None:
        periods.append({"start": start, "end": series[-1][0], "seconds": round(series[-1][0] - start, 1)})
    return periods


def _formula_check(name: str, series, ups: list[dict], bounds: Bounds) -> Check:
    predicted = 0
    for _t, s in series:
        # The utilisation is an average over the ready pods (not-ready ones count as 0 % on scale-up).
        current, ratio = int(s.get("ready") or 0), _ratio(s)
        if current and abs(ratio - 1) > bounds.tolerance:
            want = math.ceil(current * ratio)
            predicted = max(predicted, min(int(s.get("max") or want), max(int(s.get("min") or 1), want)))
    peak = max(int(s.get("current") or 0) for _, s in series)
    ok = abs(peak - predicted) <= bounds.replica_slack
    return Check("replicas vs formula", name, ok, peak, predicted,
                 f"peak {peak} replicas; ceil(ready × utilisation / target) predicts {predicted}")


def _slo_checks(name: str, rows: Sequence[Mapping], catalog: Catalog, budget: float) -> list[Check]:
    routes = _routes_of(name, catalog)
    if not rows or routes == set():
        return [Check("SLO during scale-up", name, None, None, None,
                      "no client traffic recorded in the window" if routes else "serves no API")]
    requests = failures = 0.0
    p95s: dict[str, list[float]] = {}
    limits: dict[str, int] = {}
    for r in rows:
        for key, v in (r.get("routes") or {}).items():
            method, _, route = key.partition(" ")
            if routes is not None and (method, route) not in routes:
                continue
            requests += float(v.get("rps", 0))
            failures += float(v.get("fails_per_s", 0))
            entry = catalog.lookup(method, route)
            if entry is not None and v.get("p95_ms") is not None and v.get("rps"):
                p95s.setdefault(key, []).append(float(v["p95_ms"]))
                limits[key] = entry.p95_ms
    # Each row's p95 covers Locust's last 10 s; the window's typical value is their median.
    worst: tuple[float, str, int] | None = None
    for key, values in p95s.items():
        excess = statistics.median(values) / limits[key]
        if worst is None or excess > worst[0]:
            worst = (excess, key, limits[key])
    checks = []
    if worst is not None:
        checks.append(Check("p95 during scale-up", name, worst[0] <= 1.0, round(worst[0] * worst[2]),
                            worst[2],
                            f"worst route {worst[1]} (median of 10-s p95s, ms, against its tier's limit)"))
    rate = failures / requests if requests else 0.0
    checks.append(Check("errors during scale-up", name, rate <= budget, round(rate, 4), round(budget, 4),
                        f"{failures:.0f} failed of {requests:.0f} requests"))
    return checks


def _scale_down_check(name: str, series, downs: list[dict], rows: Sequence[Mapping]) -> Check:
    if not downs:
        return Check("no failures at scale-down", name, None, None, 0, "no scale-down observed")
    start = downs[0]["t"]
    end = next((t for t, s in series if t >= start and int(s.get("current") or 0) <= int(s.get("min") or 1)),
               series[-1][0])
    window = _window(rows, start, end + 2.0)  # a replica stops a little after the decision
    if not window:
        return Check("no failures at scale-down", name, None, None, 0,
                     "no client traffic during the scale-down")
    failed = sum(float(r.get("fails_per_s", 0)) for r in window)
    return Check("no failures at scale-down", name, failed == 0, round(failed), 0,
                 f"failed requests while {name} went down to {downs[-1]['size']} replica(s)")


def _efficiency_check(name: str, series, rows: Sequence[Mapping], catalog: Catalog, bounds: Bounds,
                      info: dict) -> Check:
    routes = _routes_of(name, catalog)
    by_n: dict[int, list[float]] = {}
    for r in rows:
        svc = _at(series, r["t"])
        if svc is None:
            continue
        n = int(svc.get("ready") or 0)
        if n and _ratio(svc) >= 1 - 2 * bounds.tolerance:  # near or above the target utilisation
            by_n.setdefault(n, []).append(_service_rps(r, routes))
    per_replica = {n: round(statistics.median(v) / n, 2) for n, v in sorted(by_n.items()) if v}
    info["rps_per_replica"] = per_replica
    if 1 not in per_replica or len(per_replica) < 2:
        return Check("scaling efficiency", name, None, None, bounds.min_efficiency,
                     f"req/s per ready replica near target: {per_replica or 'not observed'}")
    n = max(per_replica)
    eff = per_replica[n] / per_replica[1]  # (throughput(n) / n) / throughput(1)
    info["efficiency"] = round(eff, 2)
    ok = None if bounds.min_efficiency is None else eff >= bounds.min_efficiency
    return Check("scaling efficiency", name, ok, round(eff, 2), bounds.min_efficiency,
                 f"throughput at {n} replicas is {eff:.2f} × {n} × one replica's ({per_replica[1]} req/s)")


# --------------------------------------------------------------------------- release gate

def gate(current: Mapping[str, Any], baseline: Mapping[str, Any], *, p95_pct: float = 25.0,
         rps_per_replica_pct: float = 20.0, time_to_scale_pct: float = 50.0,
         min_requests: int = 50) -> list[Check]:
    """Compare a report with the previous release's (Keptn / k6 regression gates): p95 per route
    (worse by more than ``p95_pct`` fails), requests/s per replica (lower by more than
    ``rps_per_replica_pct``), time to ready replicas (longer by more than ``time_to_scale_pct``)."""
    checks: list[Check] = []
    old_routes = {(r["method"], r["name"]): r for r in baseline.get("summary", {}).get("routes", [])}
    for r in current.get("summary", {}).get("routes", []):
        old = old_routes.get((r["method"], r["name"]))
        if not old or not old.get("p95_ms") or not r.get("p95_ms") or min(r["requests"],
                                                                          old["requests"]) < min_requests:
            continue
        change = 100 * (r["p95_ms"] - old["p95_ms"]) / old["p95_ms"]
        checks.append(Check("p95 vs baseline", f"{r['method']} {r['name']}", change <= p95_pct,
                            round(change, 1),
                            p95_pct, f"{old['p95_ms']:.0f} → {r['p95_ms']:.0f} ms (% change)"))
    old_services = baseline.get("verdict", {}).get("services", {})
    for name, svc in current.get("verdict", {}).get("services", {}).items():
        old = old_services.get(name) or {}
        new_rpr, old_rpr = svc.get("rps_per_replica") or {}, old.get("rps_per_replica") or {}
        for n, value in new_rpr.items():
            before = old_rpr.get(n)
            if before:
                change = 100 * (value - before) / before
                checks.append(Check("req/s per replica vs baseline", f"{name} ×{n}",
                                    change >= -rps_per_replica_pct,
                                    round(change, 1), -rps_per_replica_pct,
                                    f"{before} → {value} req/s per replica"))
        if svc.get("ready_s") is not None and old.get("ready_s"):
            change = 100 * (svc["ready_s"] - old["ready_s"]) / old["ready_s"]
            checks.append(Check("time to scale vs baseline", name, change <= time_to_scale_pct,
                                round(change, 1),
                                time_to_scale_pct,
                                f"{old['ready_s']} → {svc['ready_s']} s to ready replicas"))
    return checks
