"""``ofsre pcm``: the PCM store, its sender and our own compliance figures.

    ofsre pcm status [--json]                      backlog, last delivery, today's results, deadline risk
    ofsre pcm report --day YYYY-MM-DD [--format table|json|csv] [--role SERVER|CLIENT]
    ofsre pcm send [--once] [--metrics-port N]     deliver the store to the PCM (OFSRE_PCM_* settings)
    ofsre pcm results [--day D] [--status S]       stored per-report results (ACCEPTED, …, PENDING, HELD)
    ofsre pcm requeue                              send held reports again once the cause is fixed
    ofsre pcm mock [--port N]                      a local PCM for development

Every subcommand takes ``--store PATH`` (default ``$OFSRE_PCM_STORE``, else
``$OFSRE_DATA_DIR/pcm/reports.db``). Times are shown in Brasília time (BRT, UTC-3).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import AT_RISK_S
from .store import BRT, ReportStore, default_store_path

if TYPE_CHECKING:
    from .sender import Sender

__all__ = ["configure", "risk"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pcm_command", metavar="<pcm command>", required=True)

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--store", type=Path, default=None, help="report store (default: %(default)s → "
                       "$OFSRE_PCM_STORE or $OFSRE_DATA_DIR/pcm/reports.db)")
        p.set_defaults(func=func)
        return p

    p = add("status", "backlog, last delivery, today's per-status counts and deadline risk", _status)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = add("report", "what the regulator will compute for one day: p95 vs tier limit, availability", _report)
    p.add_argument("--day", required=True, help="the Brasília day, YYYY-MM-DD")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--role", choices=("SERVER", "CLIENT"), default="SERVER",
                   help="SERVER: the calls we answer (default); CLIENT: the institutions we call")
    p = add("send", "deliver the stored reports to the PCM (settings: OFSRE_PCM_URL, OFSRE_PCM_CLIENT_ID, "
            "OFSRE_PCM_CLIENT_SECRET, …)", _send)
    p.add_argument("--once", action="store_true",
                   help="deliver what is pending, then exit (1 if some is left)")
    p.add_argument("--timeout", type=float, default=None, help="with --once: give up after this many seconds")
    p.add_argument("--url", help="PCM base URL (overrides OFSRE_PCM_URL)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve the deadline metrics on this port")
    p = add("results", "stored reports with the PCM's result, newest first", _results)
    p.add_argument("--day", help="only this Brasília day")
    p.add_argument("--status",
                   help="ACCEPTED, DISCARDED, PAIRED_INCONSISTENT, UNPAIRED, SINGLE, PENDING or HELD")
    p.add_argument("--limit", type=int, default=20)
    add("requeue", "put held reports back in the queue (after fixing what the PCM refused)", _requeue)
    p = sub.add_parser("mock", help="run a local PCM (report and token endpoints) for development")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--port-file", type=Path)
    p.set_defaults(func=_mock)


def _store(args: argparse.Namespace) -> ReportStore:
    store = ReportStore(args.store or default_store_path())
    store.promote()   # reports the capturing services staged count too
    return store


def _brt(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, BRT).strftime("%Y-%m-%d %H:%M:%S BRT")


def _duration(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(int(seconds))
    return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def risk(figures: dict[str, Any]) -> str:
    """``ok``, ``at risk`` (held reports, or a backlog with < 4 h left) or ``missed`` (deadline passed)."""
    waiting = sum(figures["unsent"].values()) + figures["held"]
    if waiting and figures["seconds_left"] < 0:
        return "missed"
    if figures["held"] or (waiting and figures["seconds_left"] < AT_RISK_S):
        return "at risk"
    return "ok"


def _status(args: argparse.Namespace) -> int:
    from .metrics import deadline_figures

    with _store(args) as store:
        f = deadline_figures(store)
    f["risk"] = risk(f)
    if args.json:
        print(json.dumps(f, indent=2))
        return 0
    unsent = ", ".join(f"{n} {kind}" for kind, n in f["unsent"].items())
    print(f"store          {args.store or default_store_path()}")
    print(f"backlog        {unsent} unsent; {f['held']} held")
    if f["oldest_unsent_ts"] is not None:
        print(f"oldest unsent  {_brt(f['oldest_unsent_ts'])} (age {_duration(f['oldest_unsent_age_s'])})")
    print(f"deadline       {_brt(f['deadline_ts'])} for {f['deadline_day']}'s reports: "
          f"{_duration(f['seconds_left'])} left")
    print(f"risk           {f['risk']}")
    print(f"last delivery  {_brt(f['last_delivery_ts'])}")
    counts = ", ".join(f"{k} {v}" for k, v in f["day_counts"].items())
    print(f"today ({f['today']})  {counts}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .compliance import day_report, render_csv, render_json, render_table

    try:
        datetime.strptime(args.day, "%Y-%m-%d")
    except ValueError:
        print(f"--day must be YYYY-MM-DD, not {args.day!r}", file=sys.stderr)
        return 2
    with _store(args) as store:
        report = day_report(store, args.day, role=args.role)
    render = {"table": render_table, "json": render_json, "csv": render_csv}[args.format]
    sys.stdout.write(render(report) if args.format != "json" else render(report) + "\n")
    return 0


def _results(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = store.results(day=args.day, result=args.status, limit=args.limit)
    for r in rows:
        verdict = r["result"] or r["state"].upper()
        extra = r["message"] or r["error"] or ""
        line = f"{_brt(r['ts'])}  {r['role']:<6} {r['statusCode']} {r['endpoint']}  {verdict}  {extra}"
        print(line.rstrip())
    if not rows:
        print("(no reports)")
    return 0


def _requeue(args: argparse.Namespace) -> int:
    with _store(args) as store:
        count = store.requeue_held()
    print(f"{count} held reports queued again")
    return 0


def _send(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from .metrics import StoreCollector
    from .sender import Sender, SenderOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = SenderOptions.from_env(**({"url": args.url} if args.url else {}))
    store = _store(args)
    sender = Sender(store, options)
    if args.metrics_port is not None:
        StoreCollector(store)  # in the global registry, which start_http_server serves
        start_http_server(args.metrics_port, "127.0.0.1" if args.metrics_port == 0 else "0.0.0.0")
    signal.signal(signal.SIGTERM, lambda *_: sender.stop())
    try:
        if args.once:
            progress = threading.Thread(target=_progress, args=(sender,), daemon=True)
            progress.start()
            done = sender.drain(args.timeout)
            left = store.counts_by_state()
            print(f"delivered {sender.stats['delivered']}, held {sender.stats['held']}, "
                  f"left {left['pending']}", file=sys.stderr)
            return 0 if done else 1
        print(f"sending {store.path} to {options.url}", file=sys.stderr, flush=True)
        sender.run()
        return 0
    finally:
        sender.close()
        store.close()


def _progress(sender: Sender) -> None:
    while True:
        time.sleep(2.0)
        print(f"… {sender.stats['delivered']} delivered, {sender.stats['held']} held", file=sys.stderr,
              flush=True)


def _mock(args: argparse.Namespace) -> int:
    from .mock import main

    return main(["--port", str(args.port)] + (["--port-file", str(args.port_file)] if args.port_file else []))
