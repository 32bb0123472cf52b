"""Run every benchmark in ``bench/`` and print its table: ``make bench`` or ``python bench/run.py``.

The convention every ``bench/bench_*.py`` module follows
--------------------------------------------------------
* It defines ``run() -> str``: called with no arguments, it runs the whole benchmark
  (starting and stopping any server or load-generator process it needs, on 127.0.0.1
  with free ports only) and returns the result as a plain-text table, ready to print.
  It prints nothing itself except progress lines to stderr.
* Tuning knobs are environment variables with the ``BENCH_`` prefix (for example
  ``BENCH_DURATION=5`` seconds per measured variant), each with a sensible default,
  so ``run()`` needs no arguments.
* A figure that misses its target is reported in the table (e.g. a ``target`` column),
  not raised: a benchmark is a measurement, not a test. ``run()`` raises only when the
  benchmark itself could not run (a server that would not start, a missing tool).
* The module ends with ``if __name__ == "__main__": print(run())`` so it also runs alone.

This runner imports the modules in name order, in one process, one after the other
(never in parallel: they would compete for the same cores), prints a heading and the
returned table for each, goes on after a failure (printing the traceback) and exits 1
if any module failed. ``python bench/run.py gateway`` runs only the modules whose name
contains ``gateway``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(selected: list[str]) -> list[Path]:
    """The ``bench_*.py`` files beside this one, in name order, filtered by name fragments."""
    files = sorted(HERE.glob("bench_*.py"))
    if selected:
        files = [f for f in files if any(s in f.stem for s in selected)]
    return files


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # lets the module's subprocesses and pickling find it
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    selected = list(sys.argv[1:] if argv is None else argv)
    files = discover(selected)
    if not files:
        print(f"no bench_*.py module matches {selected}", file=sys.stderr)
        return 1
    failed = []
    for path in files:
        print(f"\n== {path.stem} ==", flush=True)
        started = time.monotonic()
        try:
            table = load(path).run()
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            failed.append(path.stem)
            continue
        print(table.rstrip("\n"))
        print(f"({path.stem}: {time.monotonic() - started:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
