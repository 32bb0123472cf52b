"""``ofsre platform up|down|status|migrate``: the local runtime from the command line.

    ofsre platform up                       # foreground; Ctrl-C / SIGTERM stops everything
    ofsre platform up --detach              # background; state in $OFSRE_DATA_DIR/runtime.json
    ofsre platform status                   # replicas, CPU/memory per replica, HPA state
    ofsre platform down                     # stops a detached (or foreground) runtime
    ofsre platform migrate                  # only create the schema

Useful ``up`` options: ``--replicas 2``, ``--max-replicas 6``, ``--sync-period 5``,
``--scale-down-window 60``, ``--gateway-port 0`` (a free port), ``--database-url
postgresql+asyncpg://postgres@127.0.0.1:5432/test``, ``--prometheus``, ``--config runtime.toml``
(per-service settings; see :mod:`ofsre.platform.runtime.config`).

This module parses and prints; starting, finding and stopping a detached runtime is
:mod:`ofsre.platform.runtime.process`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import process
from .config import RuntimeConfig, load_toml
from .runtime import LocalRuntime, RuntimePaths, RuntimeStartError, process_alive

__all__ = ["configure", "build_config", "render_status", "render_endpoints"]

_SERVICE_FLAGS = {  # flag -> ServiceConfig field, applied to every service
    "replicas": "replicas", "min_replicas": "min_replicas", "max_replicas": "max_replicas",
    "cpu_request": "cpu_request", "memory_request_mib": "memory_request_mib", "cpu_target": "cpu_target",
    "memory_target": "memory_target",
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="platform_command", metavar="<subcommand>")
    up = sub.add_parser("up", help="start the platform (foreground unless --detach)")
    _common(up)
    up.add_argument("--config", type=Path, help="TOML file with runtime/autoscaler/per-service settings")
    up.add_argument("--host", default=None, help="address every process binds (default 127.0.0.1)")
    up.add_argument("--gateway-port", type=int, default=None,
                    help="gateway port (default 8080; 0 = free port)")
    up.add_argument("--runtime-port", type=int, default=None,
                    help="runtime /metrics and /status port (0 = free)")
    up.add_argument("--database-url", default=None,
                    help="SQLAlchemy async URL (default: SQLite in the data dir)")
    up.add_argument("--queue-backend", default=None, help="db (default) | sqs | kafka | pubsub")
    up.add_argument("--mtls", choices=("on", "off"), default=None,
                    help="client-certificate check (default on)")
    up.add_argument("--services", default=None,
                    help="comma-separated subset of consents,accounts,payments,worker")
    up.add_argument("--replicas", type=int, help="replicas per service at start (default 1)")
    up.add_argument("--min-replicas", type=int, help="HPA minReplicas for every service (default 1)")
    up.add_argument("--max-replicas", type=int, help="HPA maxReplicas for every service (default 4)")
    up.add_argument("--cpu-request", type=float, help="CPU request per replica in cores (default 0.25)")
    up.add_argument("--memory-request-mib", type=int, help="memory request per replica (default 256)")
    up.add_argument("--cpu-target", type=int, help="target CPU utilisation, %% of request (default 80)")
    up.add_argument("--memory-target", type=int, help="target memory utilisation, %% of request (default 80)")
    up.add_argument("--no-autoscale", action="store_true", help="keep the replica counts fixed")
    up.add_argument("--sync-period", type=float, help="HPA sync period in seconds (default 15)")
    up.add_argument("--tolerance", type=float, help="HPA tolerance (default 0.1)")
    up.add_argument("--scale-down-window", type=float,
                    help="scale-down stabilisation window, s (default 300)")
    up.add_argument("--prometheus", action="store_true", help="also start Prometheus with the scrape config")
    up.add_argument("--prometheus-binary", default=None, help="prometheus executable (default: on PATH)")
    up.add_argument("--detach", action="store_true", help="run in the background; use status/down later")
    up.set_defaults(func=cmd_up)
    for name, helptext, func in (("down", "stop a running platform", cmd_down),
                                 ("status", "replicas, CPU/memory per replica and HPA state", cmd_status),
                                 ("migrate", "create the database schema and exit", cmd_migrate)):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        if name == "migrate":
            p.add_argument("--database-url", default=None)
        if name == "down":
            p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the runtime's /status JSON")
        p.set_defaults(func=func)
    parser.set_defaults(func=lambda _args: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="state, logs, SQLite (default $OFSRE_DATA_DIR or ./var)")


def build_config(args: argparse.Namespace) -> RuntimeConfig:
    """CLI flags over the TOML file over the environment over defaults."""
    cfg = RuntimeConfig()
    if getattr(args, "data_dir", None):
        cfg = replace(cfg, data_dir=args.data_dir)
    if getattr(args, "config", None):
        cfg = load_toml(args.config, cfg)
    direct = {"host": "host", "gateway_port": "gateway_port", "runtime_port": "runtime_port",
              "database_url": "database_url", "queue_backend": "queue_backend",
              "prometheus_binary": "prometheus_binary"}
    cfg = replace(cfg,
                  **{f: getattr(args, a) for a, f in direct.items() if getattr(args, a, None) is not None})
    if getattr(args, "mtls", None):
        cfg = replace(cfg, mtls=args.mtls == "on")
    if getattr(args, "prometheus", False):
        cfg = replace(cfg, prometheus=True)
    if getattr(args, "services", None):
        wanted = [s.strip() for s in args.services.split(",") if s.strip()]
        unknown = set(wanted) - {s.name for s in cfg.services}
        if unknown:
            raise SystemExit(f"unknown services: {', '.join(sorted(unknown))}")
        cfg = replace(cfg, services=tuple(s for s in cfg.services if s.name in wanted))
    per_service = {f: getattr(args, a) for a, f in _SERVICE_FLAGS.items()
                   if getattr(args, a, None) is not None}
    if getattr(args, "no_autoscale", False):
        per_service["autoscale"] = False
    if per_service:
        cfg = cfg.with_services(**per_service)
    if getattr(args, "no_autoscale", False):  # the gateway is autoscaled too (as in the chart)
        cfg = replace(cfg, gateway=replace(cfg.gateway, autoscale=False))
    controller = {k: getattr(args, k) for k in ("sync_period", "tolerance")
                  if getattr(args, k, None) is not None}
    if controller:
        cfg = replace(cfg, controller=replace(cfg.controller, **controller))
    if getattr(args, "scale_down_window", None) is not None:
        cfg = replace(cfg,
                      scale_down=replace(cfg.scale_down, stabilization_window_seconds=args.scale_down_window))
    return cfg


# --------------------------------------------------------------------------- up

def cmd_up(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.prometheus and not shutil.which(cfg.prometheus_binary):
        print(f"--prometheus: {cfg.prometheus_binary!r} not found on PATH", file=sys.stderr)
        return 2
    if args.detach:
        return _detach(cfg)
    process.basic_logging()
    rt = LocalRuntime(cfg)

    def ready(runtime: LocalRuntime) -> None:
        print(render_endpoints(runtime.status()), flush=True)
        print("Ctrl-C (or `ofsre platform down` from another shell) stops everything.", flush=True)

    try:
        rt.serve(on_ready=ready)
    except RuntimeStartError as exc:
        print(f"ofsre platform up failed: {exc}", file=sys.stderr)
        return 1
    print("platform stopped", flush=True)
    return 0


def _detach(cfg: RuntimeConfig) -> int:
    def started(pid: int, log_path: Path) -> None:
        print(f"starting the platform in the background (pid {pid}, log {log_path}) …", flush=True)

    try:
        status = process.start_detached(cfg, on_started=started)
    except RuntimeStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(render_endpoints(status) if status else f"running; state in {RuntimePaths(cfg.data_dir).state}")
    print("`ofsre platform status` shows replicas and HPA state; `ofsre platform down` stops it.")
    return 0


# --------------------------------------------------------------------------- status / down / migrate

def cmd_status(args: argparse.Namespace) -> int:
    paths = RuntimePaths(build_config(args).data_dir)
    state = process.read_state(paths)
    if not state:
        print(f"not running (no {paths.state})")
        return 3
    if not process_alive(state.get("pid"), state.get("create_time")):
        print(f"stale state: runtime pid {state.get('pid')} is gone; `ofsre platform down` cleans up")
        return 1
    status = process.fetch_status(state)
    if status is None:
        print(f"runtime pid {state['pid']} is {state.get('phase')}; its status endpoint does not answer yet")
        return 1
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    paths = RuntimePaths(build_config(args).data_dir)
    stopped = process.stop_detached(
        paths, args.timeout, on_stopping=lambda pid: print(f"stopping the runtime (pid {pid}) …", flush=True))
    if stopped is None:
        print(f"nothing to stop (no {paths.state})")
        return 0
    if stopped.killed:
        print(f"the runtime did not stop within {args.timeout:g} s: SIGKILL", file=sys.stderr)
    leftovers = stopped.leftovers
    print("stopped" + (f" (also stopped {leftovers} orphaned replica processes)" if leftovers else ""))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    RuntimePaths(cfg.data_dir).logs.mkdir(parents=True, exist_ok=True)
    try:
        LocalRuntime(cfg).migrate()
    except RuntimeStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"schema ready ({cfg.resolved_database_url.split('://', 1)[0]})")
    return 0


# --------------------------------------------------------------------------- rendering

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render_endpoints(status: dict[str, Any]) -> str:
    """Where everything listens, one line each (printed by ``up``)."""
    ep, hpas, deps = status["endpoints"], status.get("hpa", {}), status.get("deployments", {})
    lines = [f"ofsre platform is up (runtime pid {status['runtime']['pid']})",
             f"  {'gateway':<16} {ep['gateway']}"]
    for name, urls in ep["services"].items():
        h = hpas.get(name)
        req = deps.get(name, {}).get("requests", {})
        scale = (f"HPA {h['min_replicas']}-{h['max_replicas']}, targets "
                 + ", ".join(f"{r} {t}%" for r, t in h["targets"].items()) if h else "fixed")
        lines.append(f"  {name:<16} {' '.join(urls) or '-'}  ({len(urls)} ready; {scale}; "
                     f"request {req.get('cpu', 0):g} core / {req.get('memory', 0) / 2**20:.0f} MiB)")
    lines += [f"  {'runtime metrics':<16} {ep['runtime_metrics']}  (kube_* series)",
              f"  {'runtime status':<16} {ep['runtime_status']}"]
    if ep.get("prometheus"):
        lines.append(f"  {'prometheus':<16} {ep['prometheus']}")
    lines += [f"  {'scrape config':<16} {ep['scrape_config']}",
              f"  {'upstreams file':<16} {ep['upstreams_file']}",
              f"  {'logs':<16} {ep['logs']}",
              f"  {'database':<16} {ep['database_url']} (queue backend: {ep['queue_backend']})"]
    return "\n".join(lines)


def render_status(status: dict[str, Any]) -> str:
    """The ``status`` report: HPAs, then every replica with its CPU and memory."""
    rt, ep = status["runtime"], status["endpoints"]
    out = [f"runtime pid {rt['pid']} ({rt['phase']}, up {rt['uptime_seconds']:.0f} s); gateway "
           f"{ep['gateway']}; HPA sync every {status['sync_period']:g} s", ""]
    out.append(f"{'HPA':<10} {'READY':>5} {'CUR':>4} {'DES':>4} {'MIN':>4} {'MAX':>4}  {'CPU':>10}  "
               f"{'MEMORY':>10}  CONDITIONS")
    for name, h in status["hpa"].items():
        dep = status["deployments"][name]
        util = {m["resource"]: f"{m['utilization']}%/{m['target']}%" for m in h["metrics"]}
        conds = " ".join(f"{c['type']}={c['status']}({c['reason']})" for c in h["conditions"]) or "-"
        out.append(f"{name:<10} {dep['available']:>5} {h['current_replicas']:>4} {h['desired_replicas']:>4} "
                   f"{h['min_replicas']:>4} {h['max_replicas']:>4}  {util.get('cpu', '-'):>10}  "
                   f"{util.get('memory', '-'):>10}  {conds}")
    out += ["", f"{'REPLICA':<14} {'STATE':<11} {'PID':>7}  {'URL':<24} {'CPU cores':>9} {'%req':>5} "
                f"{'MEM MiB':>8} {'%req':>5}"]
    for dep in status["deployments"].values():
        for r in dep["replicas"]:
            cores = "-" if r.get("cpu_cores") is None else f"{r['cpu_cores']:.3f}"
            mem = "-" if r.get("memory_bytes") is None else f"{r['memory_bytes'] / 2**20:.1f}"
            out.append(f"{r['name']:<14} {r['state']:<11} {r['pid']:>7}  {r['url']:<24} {cores:>9} "
                       f"{_pct(r.get('cpu_percent_of_request')):>5} {mem:>8} "
                       f"{_pct(r.get('memory_percent_of_request')):>5}")
    events = status.get("events") or []
    if events:
        out += ["", "recent HPA events:"]
        for e in events[-8:]:
            when = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            out.append(f"  {when} {e['hpa']:<10} {e['type']:<7} {e['reason']}: {e['message']}")
    return "\n".join(out)
