"""``ofsre loadtest verify-scaling``: drive a shape, watch the platform scale, give a verdict.

::

    ofsre loadtest verify-scaling --target local --report var/scaling  # starts the platform itself
    ofsre loadtest verify-scaling --target local --data-dir var        # joins a running `ofsre platform up`
    ofsre loadtest verify-scaling --target kubernetes --host https://gw.example --namespace ofsre \\
        --kubeconfig ~/.kube/config --baseline last-release/report.json -- --base-users 20

What happens: (local) the platform is started with ``ofsre platform up --detach`` unless one
runs in ``--data-dir``, with the personas' certificates as its client CA; a watcher samples
the autoscaled workloads every second (:mod:`.watchers`) while Locust runs the suite (default
``spike``: base load, a sudden ×5, back to base so the scale-down happens under traffic) in a
process of its own; after Locust ends the watcher goes on until every HPA is back at its
minimum (or ``--cooldown`` runs out); then :func:`ofsre.loadtests.verdict.judge` gives the
verdict, ``--baseline`` adds the release gate, and ``report.json`` + ``report.html`` are
written. Exit status 0 when the verdict passes, 1 when it does not (the table says why).

Everything after ``--`` goes to the suite (shape parameters, ``--mix`` …). This module imports
neither locust nor the platform: the platform is a command and a few HTTP endpoints here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .verdict import Bounds, Check, gate, judge

if TYPE_CHECKING:
    from .watchers import KubernetesWatcher, LocalWatcher

__all__ = ["configure", "run", "VerifyOptions"]

_LOCAL_SUITE_ARGS = ("--mix", "open_data=0")  # the reference platform serves no open data


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=("local", "kubernetes"), default="local")
    parser.add_argument("--suite", default="spike", help="suite (locustfile) to drive (default spike)")
    parser.add_argument("--host", default="", help="the gateway URL (kubernetes; local: found by itself)")
    parser.add_argument("--report", type=Path, default=Path("scaling-report"),
                        help="directory for the report")
    parser.add_argument("--baseline", type=Path,
                        help="the previous release's report.json: fail on regressions")
    parser.add_argument("--p95-regression", type=float, default=25.0,
                        help="%% worse p95 per route that fails")
    parser.add_argument("--rps-regression", type=float, default=20.0,
                        help="%% fewer req/s per replica that fails")
    parser.add_argument("--time-to-scale-regression", type=float, default=50.0,
                        help="%% slower scale-up that fails")
    parser.add_argument("--max-reaction", type=float, default=100.0,
                        help="s to the scale-up decision (default 100)")
    parser.add_argument("--max-ready", type=float, default=160.0,
                        help="s to ready new replicas (default 160)")
    parser.add_argument("--min-efficiency", type=float,
                        help="fail below this scaling efficiency (default: report)")
    parser.add_argument("--expect-scale", default="", help="comma-separated services that must scale up")
    parser.add_argument("--cooldown", type=float, help="s to wait after the load for min replicas "
                        "(default: the scale-down window + 3 syncs)")
    parser.add_argument("--prometheus",
                        help="Prometheus URL: the server's view (requests, p95 per route at the "
                        "gateway) beside Locust's, and where they disagree")
    parser.add_argument("--users-timeout", type=float, default=1800, help="s the suite may run at most")
    local = parser.add_argument_group("local target")
    local.add_argument("--data-dir", type=Path, help="runtime data dir (default: a fresh temporary one)")
    local.add_argument("--sync-period", type=float, default=15.0,
                       help="HPA sync period of a started platform")
    local.add_argument("--scale-down-window", type=float, default=300.0,
                       help="scale-down stabilisation window")
    local.add_argument("--max-replicas", type=int, default=4, help="maxReplicas of every workload")
    local.add_argument("--cpu-request", type=float, help="CPU request per replica (cores)")
    local.add_argument("--gateway-cpu-request", type=float, help="CPU request per gateway replica (cores)")
    local.add_argument("--services", default="", help="subset of consents,accounts,payments,worker")
    local.add_argument("--institutions", type=int, default=12, help="personas (certificates) to create")
    local.add_argument("--keep", action="store_true", help="keep the data directory")
    kube = parser.add_argument_group("kubernetes target")
    kube.add_argument("--namespace", default="ofsre")
    kube.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    kube.add_argument("--context")
    kube.add_argument("--hpa", default="", help="comma-separated HPA names to watch (default: all)")
    parser.add_argument("suite_args", nargs=argparse.REMAINDER, help="after --: passed to the suite")
    parser.set_defaults(func=cmd_verify)


def _ofsre() -> list[str]:
    return [sys.executable, "-m", "ofsre"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


class LocalPlatform:
    """An `ofsre platform up --detach` in ``data_dir`` (started here unless one is running)."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args, self.data_dir, self.started = args, data_dir, False
        self.pki = data_dir / "pki"

    def _state(self) -> dict | None:
        try:
            return json.loads((self.data_dir / "runtime.json").read_text())
        except (OSError, ValueError):
            return None

    def _config_toml(self) -> Path:
        a = self.args
        lines = ["[autoscaler]", f"sync_period = {a.sync_period}",
                 f"scale_down_stabilization = {a.scale_down_window}"]
        names = ["consents", "accounts", "payments", "worker", "gateway"]
        for name in names:
            lines.append(f"[services.{name}]")
            lines.append(f"max_replicas = {a.max_replicas}")
            cpu = a.gateway_cpu_request if name == "gateway" and a.gateway_cpu_request else a.cpu_request
            if cpu:
                lines.append(f"cpu_request = {cpu}")
        path = self.data_dir / "verify-runtime.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> dict:
        state = self._state()
        if state and state.get("phase") == "running":
            print(f"using the platform running in {self.data_dir} (pid {state.get('pid')})", flush=True)
            return state
        from .personas import write_pki

        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_pki(self.pki, self.args.institutions)
        env = {**os.environ, "OFSRE_CLIENT_CA_FILE": str(self.pki / "ca.pem"),
               "OFSRE_TRUSTED_PROXIES": "127.0.0.1/32"}
        cmd = [*_ofsre(), "platform", "up", "--detach", "--data-dir", str(self.data_dir), "--gateway-port",
               "0", "--config", str(self._config_toml())]
        if self.args.services:
            cmd += ["--services", self.args.services]
        print(f"starting the platform in {self.data_dir} …", flush=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"the platform did not start:\n{out.stdout}{out.stderr}")
        self.started = True
        return self._state() or {}

    def stop(self) -> None:
        if self.started:
            print("stopping the platform …", flush=True)
            subprocess.run([*_ofsre(), "platform", "down", "--data-dir", str(self.data_dir)],
                           capture_output=True, timeout=120)


class Recorder:
    """Samples a watcher once a second in a thread until stopped."""

    def __init__(self, watcher, interval: float = 1.0) -> None:
        self.watcher, self.interval = watcher, interval
        self.samples: list[dict] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaling-watcher", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self.watcher.sample(time.time())
                self.watcher.scrape_gateway(sample)
                self.samples.append(sample)
            except Exception as exc:  # noqa: BLE001 - a missed sample must not end the run
                self.errors += 1
                if self.errors in (1, 10, 100):
                    print(f"watcher: {exc!r}", file=sys.stderr, flush=True)
            self._stop.wait(self.interval)

    def at_min(self) -> bool:
        if not self.samples:
            return False
        svcs = self.samples[-1]["services"]
        return all(int(s.get("current") or 0) <= int(s.get("min") or 1) and int(s.get("ready") or 0) >= 1
                   for s in svcs.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _run_suite(args: argparse.Namespace, host: str, out: Path, extra: list[str]) -> int:
    from .cli import locust_command

    suite_args = [a for a in args.suite_args if a != "--"]
    cmd = locust_command(args.suite, ["--headless", "--host", host, "--only-summary",
                                      "--timeline", str(out / "timeline.jsonl"),
                                      "--summary-json", str(out / "summary.json"), *extra, *suite_args])
    print(f"driving the {args.suite} suite against {host} …", flush=True)
    try:
        return subprocess.run(cmd, timeout=args.users_timeout, stdout=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        print(f"the suite ran past --users-timeout {args.users_timeout:g} s", file=sys.stderr)
        return 1


def _client_routes(summary: dict) -> dict[tuple[str, str], dict]:
    """(method, route) → the client's requests (529/429/423 answers included) and p95."""
    client: dict[tuple[str, str], dict] = {}
    for r in summary.get("routes", []):
        if not r["name"].startswith("/open"):
            continue
        base = r["name"].split(" [", 1)[0]
        row = client.setdefault((r["method"], base), {"requests": 0, "p95_ms": None})
        row["requests"] += r["requests"]
        if base == r["name"]:
            row["p95_ms"] = r.get("p95_ms")
    return client


def disagreements(client: dict[tuple[str, str], dict], server: dict[tuple[str, str], dict],
                  where: str = "the gateway") -> list[str]:
    """Where the client's and the server's views of the same routes differ (counts by more than
    10 %, p95 by more than 50 % and 100 ms)."""
    notes = []
    for (method, route), c in sorted(client.items()):
        s = server.get((method, route), {})
        n, m = c["requests"], s.get("requests", 0.0)
        if n and abs(m - n) > max(5, 0.1 * n):
            notes.append(f"{method} {route}: the client counted {n} requests, {where} {m:.0f}")
        cp, sp = c.get("p95_ms"), s.get("p95_ms")
        if cp is not None and sp is not None and abs(cp - sp) > max(100.0, 0.5 * max(cp, sp)):
            notes.append(f"{method} {route}: p95 {cp:.0f} ms at the client, {sp:.0f} ms at {where}")
    return notes


def _views(watcher, summary: dict, prometheus: str | None = None, seconds: float = 0.0) -> dict:
    """Client (Locust) and server (the gateway's own metrics) views side by side."""
    client = _client_routes(summary)
    view: dict[str, Any] = {"disagreements": []}
    counted = watcher.server_requests()
    if counted:
        server = {k: {"requests": v} for k, v in counted.items()}
        view["server"] = {f"{m} {r}": v for (m, r), v in counted.items()}
        view["gateway_replicas"] = {url: sum(v for (_m, route, _s), v in counts.items()
                                             if route and route.startswith("/open"))
                                    for url, counts in watcher.server_counts.items()}
        view["disagreements"] += disagreements(client, server, "the gateway's replicas")
    if prometheus:
        try:
            from .watchers import prometheus_server_view

            server = prometheus_server_view(prometheus, seconds)
        except (OSError, ValueError, RuntimeError) as exc:
            view["disagreements"].append(f"Prometheus at {prometheus} could not be read: {exc}")
        else:
            view["prometheus"] = {f"{m} {r}": v for (m, r), v in server.items()}
            view["disagreements"] += disagreements(client, server, "Prometheus")
    return view


def run(args: argparse.Namespace) -> int:
    """The whole verification (see the module docstring); the exit code."""
    report_dir = args.report
    report_dir.mkdir(parents=True, exist_ok=True)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the platform this command started is stopped too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for stale in ("timeline.jsonl", "summary.json"):
        (report_dir / stale).unlink(missing_ok=True)
    platform, extra, temp = None, [], None
    try:
        if args.target == "local":
            data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ofsre-verify-"))
            temp = None if args.data_dir else data_dir
            platform = LocalPlatform(args, data_dir)
            state = platform.start()
            endpoints = state.get("endpoints", {})
            host = args.host or endpoints["gateway"]
            from .watchers import LocalWatcher

            watcher: LocalWatcher | KubernetesWatcher = LocalWatcher(endpoints["runtime_status"])
            extra = ["--replicas-url", endpoints["runtime_metrics"], "--runtime-data-dir",
                     str(platform.data_dir), *_LOCAL_SUITE_ARGS]
            if (platform.pki / "institutions.json").exists():
                extra += ["--pki-dir", str(platform.pki), "--institutions", str(args.institutions)]
            cooldown = (args.cooldown if args.cooldown is not None
                        else args.scale_down_window + 3 * args.sync_period)
        else:
            if not args.host:
                raise SystemExit("--target kubernetes needs --host (the gateway URL the suite drives)")
            host = args.host
            from .watchers import KubernetesWatcher

            watcher = KubernetesWatcher(args.namespace, kubeconfig=args.kubeconfig, context=args.context,
                                        hpas=_csv(args.hpa))
            cooldown = args.cooldown if args.cooldown is not None else 300 + 45
        recorder = Recorder(watcher).start()
        started = time.time()
        code = _run_suite(args, host, report_dir, extra)
        print(f"suite finished (exit {code}); waiting up to {cooldown:g} s for every HPA to be back at min …",
              flush=True)
        deadline = time.monotonic() + cooldown
        while time.monotonic() < deadline and not recorder.at_min():
            time.sleep(1.0)
        time.sleep(1.5)
        recorder.stop()
        return _conclude(args, report_dir, recorder, watcher, started, code)
    finally:
        if platform is not None:
            platform.stop()
        if temp is not None and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)


def _conclude(args, report_dir: Path, recorder: Recorder, watcher, started: float, code: int) -> int:
    rows = []
    timeline = report_dir / "timeline.jsonl"
    if timeline.exists():
        rows = [json.loads(line) for line in timeline.read_text().splitlines() if line.strip()]
    summary_file = report_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    bounds = Bounds(max_reaction_s=args.max_reaction, max_ready_s=args.max_ready,
                    min_efficiency=args.min_efficiency, expect_scale=_csv(args.expect_scale))
    verdict = judge(recorder.samples, watcher.events, rows, bounds=bounds)
    thresholds = summary.get("thresholds") or {}
    if not summary:
        verdict.checks.append(Check("suite ran", "client", False, code, 0, "the suite wrote no summary"))
    else:
        verdict.checks.append(Check("catalog thresholds", "client", bool(thresholds.get("passed")),
                                    thresholds.get("requests"), None,
                                    "; ".join(thresholds.get("violations", [])) or "every threshold held"))
        if thresholds.get("capacity_answers"):
            verdict.checks.append(Check("capacity reached (529)", "gateway", None,
                                        thresholds["capacity_answers"],
                                        None, "answers past the gateway's TPS capacity (not errors)"))
    report: dict[str, Any] = {"target": args.target, "suite": args.suite, "started": started,
                              "samples": recorder.samples, "events": watcher.events, "timeline": rows,
                              "summary": summary, "verdict": verdict.as_dict(),
                              "views": _views(watcher, summary, args.prometheus, time.time() - started)}
    gate_checks: list[Check] = []
    if args.baseline:
        try:
            baseline = json.loads(args.baseline.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--baseline {args.baseline}: {exc}") from None
        gate_checks = gate(report, baseline, p95_pct=args.p95_regression,
                           rps_per_replica_pct=args.rps_regression,
                           time_to_scale_pct=args.time_to_scale_regression)
    failed = [f"{c.service}: {c.name}: {c.detail}" for c in verdict.checks + gate_checks if c.passed is False]
    from dataclasses import asdict

    report.update(gate=[asdict(c) for c in gate_checks], failed=failed, passed=not failed)
    json_path, html_path = _write(report_dir, report)
    verdict.checks.extend(gate_checks)
    print(verdict.table(), flush=True)
    for view in report["views"]["disagreements"]:
        print(f"client/server views disagree: {view}", flush=True)
    print(f"report: {html_path}\n        {json_path}", flush=True)
    return 0 if not failed else 1


def _write(report_dir: Path, report: dict):
    from .report import write_report

    return write_report(report_dir, report)


def cmd_verify(args: argparse.Namespace) -> int:
    return run(args)


class VerifyOptions(argparse.Namespace):
    """The namespace :func:`run` takes, with the CLI's defaults (for callers other than the CLI)."""

    def __init__(self, **kwargs: Any) -> None:
        parser = argparse.ArgumentParser()
        configure(parser)
        super().__init__(**vars(parser.parse_args([])))
        for k, v in kwargs.items():
            setattr(self, k, v)
