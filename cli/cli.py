"""The ``ofsre`` command line: one entry point, one subcommand per area.

Each subcommand lives in its area's package as a module exposing
``configure(parser)`` (add its arguments) and sets ``parser.set_defaults(func=...)``;
the function takes the parsed namespace and returns an exit code. A subcommand's
module is imported only when that subcommand runs, so ``ofsre --help`` never
imports locust, grafanalib or kubernetes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._version import __version__

# name -> (module that implements it, one-line help). Later areas add a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("ofsre.instrumentation._catalog_cli",
                "show the Open Finance endpoint catalog and SLO objectives"),
    "platform": ("ofsre.platform.runtime.cli",
                 "run the platform locally: up / down / status / migrate (autoscaled)"),
    "demo": ("ofsre.platform.runtime.demo",
             "start the platform, run an Open Finance journey, summarise, stop"),
    "loadtest": ("ofsre.loadtests.cli",
                 "Locust suites of ecosystem traffic; verify-scaling gives a scaling verdict"),
    "pcm": ("ofsre.exporters.pcm.cli",
            "PCM regulatory reporting: status, report --day, send, results, requeue"),
    "dashboards": ("ofsre.dashboards.cli",
                   "build the Grafana dashboards as JSON, or publish them to Grafana"),
    "alerts": ("ofsre.alerts.cli", "build the Prometheus rules, PrometheusRule and Alertmanager example"),
    "config": ("ofsre._config_cli", "every OFSRE_* variable: default, who reads it, meaning (vars)"),
}

_DESCRIPTION = """\
ofsre — observability and SRE kit for an Open Finance Brasil platform.

Every subcommand reads the same endpoint catalog (route templates, API
families, regulatory tiers, p95 and TPM limits, SLO objectives).
Run `ofsre <command> --help` for a command's options."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofsre", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ofsre {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).configure(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
