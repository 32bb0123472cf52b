"""``ofsre loadtest``: run a suite, make the personas' PKI, verify horizontal scaling.

::

    ofsre loadtest list                                   # the suites (locustfiles) and what they do
    ofsre loadtest pki var/pki --institutions 20          # CA + one client certificate per institution
    ofsre loadtest run spike --host http://127.0.0.1:8080 --headless --base-users 4
    ofsre loadtest verify-scaling --target local --report var/scaling   # see ofsre.loadtests.verify

``run`` hands everything after the suite's name to Locust's own command line in a process of
its own (``python -m locust -f loadtests/<suite>.py …``), so every Locust option works
(``--processes``, ``--master``/``--worker``, the web UI) and gevent never patches the process
that runs this command. This module imports neither locust nor the platform.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["configure", "SUITES", "locustfile", "locust_command"]

HERE = Path(__file__).resolve().parent
SUITES = {
    "ecosystem": "closed model; users, spawn rate and run time from -u/-r/-t",
    "step_ramp": "users grow in steps (--step-users, --step-seconds, --steps)",
    "spike": "a sudden ×5 spike (--base-users, --spike-factor, --spike-after, --spike-seconds)",
    "soak": "a long steady load (--soak-users, --soak-seconds)",
    "daily": "a compressed day; the curve is an assumption (--peak-users, --day-seconds)",
    "arrival_rate": "open model, journeys per second in stages (--arrival-stages 30s:5,60s:20)",
}


def locustfile(suite: str) -> Path:
    """The locustfile of a suite name (or a path to one)."""
    if suite in SUITES:
        return HERE / f"{suite}.py"
    path = Path(suite)
    if path.is_file():
        return path
    raise SystemExit(f"unknown suite {suite!r}: one of {', '.join(SUITES)} or a locustfile path")


def locust_command(suite: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(locustfile(suite)), *args]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="loadtest_command", metavar="<subcommand>")
    ls = sub.add_parser("list", help="the suites and their shapes")
    ls.set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="run a suite with Locust (every Locust option after the suite)",
                         description="ofsre loadtest run SUITE [locust options]; e.g. "
                                     "ofsre loadtest run step_ramp --host http://127.0.0.1:8080 --headless")
    run.add_argument("suite", help=f"one of {', '.join(SUITES)}, or a locustfile")
    run.add_argument("locust_args", nargs=argparse.REMAINDER, help="passed to locust")
    run.set_defaults(func=cmd_run)
    pki = sub.add_parser("pki", help="write a CA and one client certificate per receiving institution")
    pki.add_argument("directory", type=Path)
    pki.add_argument("--institutions", type=int, default=20)
    pki.add_argument("--days", type=int, default=30, help="validity of the certificates")
    pki.set_defaults(func=cmd_pki)
    verify = sub.add_parser("verify-scaling",
                            help="drive a shape against a target, watch it scale, give a verdict",
                            description="see ofsre.loadtests.verify; suite options after --")
    from . import verify as verify_module  # imports neither locust nor the platform

    verify_module.configure(verify)
    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def cmd_list(_args: argparse.Namespace) -> int:
    for name, text in SUITES.items():
        print(f"  {name:<13} loadtests/{name}.py  {text}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    extra = [a for a in args.locust_args if a != "--"]
    cmd = locust_command(args.suite, extra)
    try:
        return subprocess.run(cmd, env=os.environ.copy()).returncode
    except KeyboardInterrupt:
        return 130


def cmd_pki(args: argparse.Namespace) -> int:
    from .personas import write_pki

    if args.institutions < 1:
        raise SystemExit("--institutions must be at least 1")
    ca = write_pki(args.directory, args.institutions, days=args.days)
    print(f"wrote {args.institutions} institution certificates and {ca}")
    print(f"gateway: OFSRE_CLIENT_CA_FILE={ca} OFSRE_TRUSTED_PROXIES=127.0.0.1/32; "
          f"suite: --pki-dir {args.directory}")
    return 0
