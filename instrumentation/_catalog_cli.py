"""`ofsre catalog`: print the endpoint catalog (table or JSON)."""

from __future__ import annotations

import argparse
import json

from .catalog import load_catalog


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--api", help="only this API family (e.g. accounts)")
    parser.add_argument("--file", help="catalog file (default: the bundled one, or $OFSRE_CATALOG)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.file)
    rows = [e for e in catalog if not args.api or e.api == args.api]
    if args.json:
        print(json.dumps({
            "slo": {k: getattr(catalog.slo, k) for k in catalog.slo.__slots__},
            "endpoints": [{"method": e.method, "route": e.route, "api": e.api, "version": e.version,
                           "tier": e.tier.name, "p95_ms": e.p95_ms, "tpm": e.tpm} for e in rows],
        }, indent=2))
        return 0
    print(f"{'METHOD':7} {'TIER':10} {'P95':>6} {'TPM':>6}  ROUTE")
    for e in rows:
        print(f"{e.method:7} {e.tier.name:10} {e.p95_ms:>6} {e.tpm or '-':>6}  {e.route}")
    print(f"{len(rows)} endpoints; latency objective {catalog.slo.latency_objective:.0%} under "
          f"the tier's p95, availability objective {catalog.slo.availability_objective:.1%}")
    return 0
