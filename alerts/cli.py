"""``ofsre alerts build --out DIR [--config FILE.toml]``: write the rule files
(see ``ofsre.alerts.build``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_config

__all__ = ["configure"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="alerts_command", metavar="<action>", required=True)
    build = sub.add_parser("build",
                           help="write Prometheus rule files, a PrometheusRule and an Alertmanager example",
                           description="Write recording-rules.yaml, alerting-rules.yaml, prometheusrule.yaml "
                                       "and alertmanager.example.yml, generated from the catalog and the "
                                       "config.")
    build.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    build.add_argument("--config", type=Path, help="TOML file overriding ofsre.alerts.config keys")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from .build import write_all

    try:
        cfg = load_config(args.config)
        written = write_all(cfg, args.out)
    except ConfigError as exc:
        print(f"ofsre alerts: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ofsre alerts: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
