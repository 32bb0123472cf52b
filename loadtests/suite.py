"""What every ofsre locustfile shares: its options, thresholds, progress line, timeline and summary.

Importing this module (after ``locust``) registers, on Locust's global ``events``:

* the suite's **command-line options** (also environment variables ``LOCUST_<NAME>`` and fields
  of the web UI): personas (``--institutions``, ``--pki-dir``, ``--mix``, ``--think-time``),
  shapes (``--step-users`` …, see :mod:`.shapes`), thresholds and output files;
* a **progress line** every ``--progress-interval`` seconds on stderr (users, requests/s, p95,
  failures, and replicas per deployment when ``--replicas-url`` points at a runtime's or
  kube-state-metrics' ``/metrics``);
* a **timeline** (``--timeline FILE``, JSON lines, one per second: users, requests/s, p95 and
  failures per route) and a **summary** (``--summary-json FILE``) for the scaling verifier;
* the **thresholds** (:mod:`.thresholds`) judged when Locust quits: a crossed threshold is
  printed by name and the exit code becomes 99 (k6's); otherwise 0, even with a few failures
  inside the error budget. ``--no-thresholds`` keeps Locust's own exit code.

In distributed runs (``--master``/``--worker``, ``--processes``) the statistics, and so the
thresholds, the timeline and the summary, live on the master.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import urllib.request

import gevent
from locust import events
from locust.runners import WorkerRunner

from ofsre.instrumentation import semconv
from ofsre.instrumentation.catalog import load_catalog

from . import personas
from .thresholds import THRESHOLD_EXIT_CODE, RouteStats, Thresholds, evaluate

__all__ = ["summary", "route_rows"]

log = logging.getLogger("ofsre.loadtests")
_REPLICAS = semconv.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE.name


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("ofsre personas")
    g.add_argument("--institutions", type=int, default=personas.DEFAULT_INSTITUTIONS,
                   help="receiving institutions (personas) sharing the users (default 20)")
    g.add_argument("--pki-dir", default="", help="the personas' certificates (`ofsre loadtest pki DIR`); "
                   "empty: no client certificate (a platform with OFSRE_MTLS=off)")
    g.add_argument("--client-cert-header", default="x-ssl-client-cert",
                   help="header the WAF forwards the certificate in (the gateway's OFSRE_CLIENT_CERT_HEADER)")
    g.add_argument("--mix", default="",
                   help="journey weights, e.g. account_reads=70,new_consent=12,payment=10,"
                   "open_data=8,revoke_probability=0.1 (defaults in loadtests/README.md)")
    g.add_argument("--think-time", default="", help="MIN,MAX seconds between journeys (default 0.5,1.5)")
    g.add_argument("--skip-resources", action="store_true", default=False,
                   help="do not call GET /resources (a target without the resources API)")
    g.add_argument("--requests-per-connection", type=int, default=20,
                   help="close the connection after this many requests (0: keep it), so new replicas "
                        "get traffic")
    g.add_argument("--transaction-pages", type=int, default=3, help="transactions pages followed per read")
    g.add_argument("--payment-polls", type=int, default=10, help="status polls per payment at most")
    g.add_argument("--payment-poll-interval", type=float, default=0.5)
    g.add_argument("--runtime-data-dir", default="", help="a local runtime's data directory: the simulated "
                   "authorisation goes to its modules (upstreams.json) with its gateway.secret")
    g.add_argument("--jwks-dir", default="", help="where the personas register their payments signing keys "
                   "(default: <runtime-data-dir>/jwks, else ./jwks)")
    g.add_argument("--platform-org", default="",
                   help="the platform's organisationId, issuer of its signed answers "
                   "(default $OFSRE_ORG_ID or ofsre-bank)")
    g.add_argument("--sim-consents-url", default="", help="base URL of the simulated consent authorisation")
    g.add_argument("--sim-payments-url", default="", help="base URL of the simulated payment authorisation")
    s = parser.add_argument_group("ofsre shapes (used by the shape locustfiles)")
    s.add_argument("--step-users", type=int, default=10)
    s.add_argument("--step-seconds", type=float, default=30)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--hold-seconds", type=float, default=0)
    s.add_argument("--base-users", type=int, default=10)
    s.add_argument("--spike-factor", type=float, default=5.0)
    s.add_argument("--spike-after", type=float, default=60)
    s.add_argument("--spike-seconds", type=float, default=60)
    s.add_argument("--recovery-seconds", type=float, default=60)
    s.add_argument("--soak-users", type=int, default=20)
    s.add_argument("--soak-seconds", type=float, default=3600)
    s.add_argument("--peak-users", type=int, default=50)
    s.add_argument("--day-seconds", type=float, default=600, help="a compressed day (default 10 minutes)")
    s.add_argument("--arrival-stages", default="30s:5,60s:20,30s:0",
                   help="open model: DURATION:JOURNEYS_PER_S stages, linear between "
                        "(k6 ramping-arrival-rate)")
    s.add_argument("--arrival-engines", type=int, default=2, help="arrival engines (users) sharing the rate")
    s.add_argument("--shape-spawn-rate", type=float, default=10, help="users started/stopped per second")
    o = parser.add_argument_group("ofsre thresholds and output")
    o.add_argument("--no-thresholds", action="store_true", default=False,
                   help="do not judge the catalog's thresholds (Locust's own exit code)")
    o.add_argument("--max-error-rate", type=float, default=None,
                   help="error budget (default: 1 - the catalog's availability objective)")
    o.add_argument("--p95-scale", type=float, default=1.0, help="fraction of each tier's p95 limit allowed")
    o.add_argument("--min-samples", type=int, default=20,
                   help="answers a route needs before its p95 is judged")
    o.add_argument("--progress-interval", type=float, default=5.0,
                   help="seconds between progress lines (0: none)")
    o.add_argument("--replicas-url", default="",
                   help="a /metrics with kube_deployment_status_replicas_available")
    o.add_argument("--timeline", default="", help="write a JSON line per second here")
    o.add_argument("--summary-json", default="", help="write the run's summary and verdict here")


@events.init.add_listener
def _weights_from_mix(environment, **_kw) -> None:
    """``--mix`` also sets the user classes' weights: ``open_data`` for open-data readers, the
    other journeys' sum for the institutions; a class whose weight is 0 is not started."""
    opts = environment.parsed_options
    if opts is None:
        return
    mix = personas.Mix.parse(getattr(opts, "mix", "") or "")
    shares = {"open_data": mix.open_data, "institution": mix.account_reads + mix.new_consent + mix.payment}
    for cls in list(environment.user_classes):
        share = getattr(cls, "mix_share", None)
        if share in shares:
            cls.weight = shares[share]
    kept = [c for c in environment.user_classes if c.weight > 0 or getattr(c, "fixed_count", 0)]
    if kept and len(kept) < len(environment.user_classes):
        environment.user_classes[:] = kept


def route_rows(stats) -> list[RouteStats]:
    """Locust's statistics entries as :class:`RouteStats`."""
    rows = []
    for entry in stats.entries.values():
        p95 = entry.get_response_time_percentile(0.95) if entry.num_requests else None
        rows.append(RouteStats(entry.method, entry.name, entry.num_requests, entry.num_failures, p95))
    return rows


def _thresholds(options) -> Thresholds:
    return Thresholds(max_error_rate=getattr(options, "max_error_rate", None),
                      min_samples=getattr(options, "min_samples", 20),
                      p95_scale=getattr(options, "p95_scale", 1.0))


def summary(environment) -> dict:
    """The run as JSON: per-route statistics, totals, failures by message, thresholds' outcome."""
    stats = environment.stats
    outcome = evaluate(route_rows(stats), load_catalog(), _thresholds(environment.parsed_options))
    routes = [{"method": e.method, "name": e.name, "requests": e.num_requests, "failures": e.num_failures,
               "p50_ms": e.get_response_time_percentile(0.5) if e.num_requests else None,
               "p95_ms": e.get_response_time_percentile(0.95) if e.num_requests else None,
               "avg_ms": e.avg_response_time, "rps": e.total_rps}
              for e in sorted(stats.entries.values(), key=lambda e: (e.name, e.method))]
    errors = [{"method": e.method, "name": e.name, "error": e.error, "occurrences": e.occurrences}
              for e in stats.errors.values()]
    total = stats.total
    return {"start": total.start_time, "end": total.last_request_timestamp, "requests": total.num_requests,
            "failures": total.num_failures, "rps": total.total_rps,
            "p95_ms": total.get_response_time_percentile(0.95) if total.num_requests else None,
            "routes": routes, "errors": errors, "thresholds": outcome.as_dict()}


# --------------------------------------------------------------------------- listeners

def _replicas(url: str) -> dict[str, int]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    found = {}
    for line in text.splitlines():
        if line.startswith(_REPLICAS + "{"):
            m = re.search(r'deployment="([^"]+)"', line)
            if m:
                found[m.group(1)] = int(float(line.rsplit(" ", 1)[1]))
    return found


def _timeline_row(environment, last: dict) -> dict:
    """One second of the run: deltas of the counters since the previous row."""
    now = time.time()
    dt = max(1e-6, now - last.get("_t", now - 1))
    routes = {}
    for e in environment.stats.entries.values():
        key = f"{e.method} {e.name}"
        before = last.get(key, (0, 0))
        reqs, fails = e.num_requests - before[0], e.num_failures - before[1]
        last[key] = (e.num_requests, e.num_failures)
        routes[key] = {"rps": round(reqs / dt, 2), "fails_per_s": round(fails / dt, 2),
                       "p95_ms": e.get_current_response_time_percentile(0.95)}
    t = environment.stats.total
    before = last.get("_total", (0, 0))
    row = {"t": round(now, 3), "users": environment.runner.user_count if environment.runner else 0,
           "rps": round((t.num_requests - before[0]) / dt, 2),
           "fails_per_s": round((t.num_failures - before[1]) / dt, 2),
           "p95_ms": t.get_current_response_time_percentile(0.95), "routes": routes}
    last["_total"], last["_t"] = (t.num_requests, t.num_failures), now
    return row


def _watch(environment) -> None:
    opts = environment.parsed_options
    interval = float(getattr(opts, "progress_interval", 5.0) or 0)
    timeline_path = getattr(opts, "timeline", "")
    replicas_url = getattr(opts, "replicas_url", "")
    timeline = open(timeline_path, "a", buffering=1) if timeline_path else None  # noqa: SIM115 - closed below
    last: dict = {}
    started = next_progress = time.monotonic()
    try:
        while True:
            gevent.sleep(1.0)
            row = _timeline_row(environment, last)
            if replicas_url and (timeline or time.monotonic() >= next_progress):
                row["replicas"] = _replicas(replicas_url)
            if timeline:
                timeline.write(json.dumps(row) + "\n")
            if interval and time.monotonic() >= next_progress:
                next_progress += interval
                total = environment.stats.total
                fail = 100 * total.num_failures / total.num_requests if total.num_requests else 0.0
                reps = " ".join(f"{k}={v}" for k, v in sorted(row.get("replicas", {}).items()))
                p95 = row["p95_ms"]
                print(f"[{time.monotonic() - started:5.0f} s] users {row['users']:>4}  "
                      f"req/s {total.current_rps:7.1f}"
                      f"  p95 {'-' if p95 is None else f'{p95:.0f} ms':>8}  failures {fail:5.2f} %"
                      + (f"  replicas {reps}" if reps else ""), file=sys.stderr, flush=True)
    finally:
        if timeline:
            timeline.close()


_watcher: list = []


@events.test_start.add_listener
def _on_start(environment, **_kw) -> None:
    if isinstance(environment.runner, WorkerRunner) or _watcher:
        return
    _watcher.append(gevent.spawn(_watch, environment))


@events.test_stop.add_listener
def _on_stop(environment, **_kw) -> None:
    while _watcher:
        _watcher.pop().kill(block=False)


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    opts = environment.parsed_options
    result = summary(environment)
    path = getattr(opts, "summary_json", "")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2, default=str)
    if getattr(opts, "no_thresholds", False):
        return
    outcome = result["thresholds"]
    if outcome["capacity_answers"]:
        print(f"capacity reached: {outcome['capacity_answers']} answers were 529 (reported, not errors)",
              file=sys.stderr)
    if outcome["tpm_answers"]:
        print(f"TPM limits reached: {outcome['tpm_answers']} justified 429 answers", file=sys.stderr)
    if outcome["passed"]:
        print(f"thresholds passed: error rate {100 * outcome['error_rate']:.2f} % "
              f"(budget {100 * outcome['error_budget']:.2f} %), every judged p95 under its tier's limit",
              file=sys.stderr)
        environment.process_exit_code = 0
    else:
        for v in outcome["violations"]:
            print(f"THRESHOLD FAILED: {v}", file=sys.stderr)
        environment.process_exit_code = THRESHOLD_EXIT_CODE
