"""Log shippers: app-thread cost per log call and end-to-end records/s against a local sink.

Run alone with ``python bench/bench_exporters.py`` or with every benchmark via ``bench/run.py``.

The sink is a separate process (so its parsing does not compete for this process's GIL)
serving Loki's, Datadog's and Elasticsearch's endpoints on 127.0.0.1; it answers 204/202/200
at once and counts the records it receives. Compared:

* python-logging-loki 0.3.1 ``LokiHandler`` (one synchronous POST per record) and
  ``LokiQueueHandler`` (the same, moved to a thread), against
* ofsre's ``LokiHandler`` (with its shipper thread, and with ``shipper_process=True``: the
  redaction, encoding and HTTP in a child process), ``DatadogHandler`` and ``ElasticHandler``.

Figures (medians of five runs of N/5 calls):

* *wall µs/call*: wall time of the logging call on the application thread. It includes
  stdlib logging's own cost (the NullHandler floor, paid by every handler) and, because of
  the GIL, the time the shipper's worker thread ran in between (ofsre's worker redacts and
  encodes while the benchmark logs in a tight loop);
* *CPU µs/call*: CPU time of the application thread alone (``time.thread_time``): the work
  the logging call itself does, without the GIL waits;
* each also *above floor* (minus the NullHandler figure: the handler's own cost) and as a
  ratio to ``LokiQueueHandler``;
* *records/s*: end to end, from the first call until the sink has counted every record
  (for python-logging-loki, what the sink counted within the time box), and its ratio to
  python-logging-loki's ``LokiQueueHandler`` (and plain ``LokiHandler``) measured in the same run.
  ``LokiQueueHandler`` gets as many calls as each ofsre handler (``BENCH_RECORDS``), timed on the app
  thread the same way; its thread then posts one record per request, a few hundred per second here,
  so delivering all of them would take minutes: its drain is time-boxed (``BENCH_PEER_DRAIN``
  seconds after the last call, default ``BENCH_DURATION``) and its records/s is the calls' count
  over the time the whole lot would take: the calls, then the rest at the pace it drained in the
  box (the output gives the figures; a box long enough to deliver them all measures it instead);
* *process CPU µs/record*: CPU time of the whole process (every thread: the app's and the
  shipper's; with ``shipper_process=True`` the shipper process's too, from ``/proc``) from the first
  call until the last record was delivered, per record delivered.

Goals (issue #10): ofsre's Loki throughput on 200,000 records >= 100x ``LokiQueueHandler``'s,
and its app-thread wall cost above the floor <= 1/3 of ``LokiQueueHandler``'s, with the total
CPU per record printed beside it; printed for both Loki variants. When the thread shipper misses
one the table ends with where the CPU of one record goes (app thread vs shipper thread) and a
profile of the shipper's per-record work.

Knobs: ``BENCH_DURATION`` seconds per time-boxed measurement (default 2), ``BENCH_RECORDS``
log calls per ofsre handler and for ``LokiQueueHandler`` (default 200000), ``BENCH_PEER_DRAIN`` seconds
``LokiQueueHandler`` may drain after its calls (default ``BENCH_DURATION``), ``BENCH_VARIANTS`` the ofsre
handlers to run, a comma list of ``loki``, ``loki_process``, ``datadog``, ``elastic`` (default all;
``BENCH_VARIANTS=loki,loki_process`` gives the Loki rows only; the floor and python-logging-loki always
run).
"""

from __future__ import annotations

import logging
import os
import queue
import statistics
import sys
import time
from collections.abc import Callable

from _common import CountingServer

DURATION = float(os.environ.get("BENCH_DURATION", "2"))
RECORDS = int(os.environ.get("BENCH_RECORDS", "200000"))
PEER_DRAIN = float(os.environ.get("BENCH_PEER_DRAIN", str(DURATION)))
_VARIANTS = os.environ.get("BENCH_VARIANTS", "loki,loki_process,datadog,elastic")
VARIANTS = [v.strip() for v in _VARIANTS.split(",") if v.strip()]
# python-logging-loki as measured in docs/log-backends.md (the source of the two goals), shown
# beside this run's own figures because a faster sink makes the peer look better here.
DOC_PLAIN_RPS, DOC_QUEUE_US = 423.0, 38.0

# The sink's answer to a POST (see _common.CountingServer): Loki's 204, Datadog's 202, Elasticsearch's 200.
SINK_ANSWER = r"""
import json

def answer(path, body):
    if path.startswith("/loki"):
        return sum(len(s["values"]) for s in json.loads(body)["streams"]), 204, None, b""
    if path.startswith("/api/v2/logs"):
        return len(json.loads(body)), 202, None, b"{}"
    return body.count(b"\n") // 2, 200, None, b'{"errors":false}'
"""


def _progress(text: str) -> None:
    print(f"[bench_exporters] {text}", file=sys.stderr, flush=True)


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.exporters.{id(handler)}")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _log_call(log: logging.Logger, i: int) -> None:
    log.info("payment %s settled for %s", f"pay-{i}", "10.00", extra={"payment_id": f"pay-{i}"})


def _time_calls(log: logging.Logger, count: int) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) spent in ``count`` logging calls on this thread."""
    started, cpu = time.perf_counter(), time.thread_time()
    for i in range(count):
        _log_call(log, i)
    return time.perf_counter() - started, time.thread_time() - cpu


def _app_us(log: logging.Logger, count: int, chunks: int = 5) -> tuple[float, float]:
    """(wall, CPU) microseconds per call: medians over ``chunks`` runs (the machine is shared and noisy)."""
    per_chunk = count // chunks
    runs = [_time_calls(log, per_chunk) for _ in range(chunks)]
    return tuple(statistics.median(run[k] for run in runs) / per_chunk * 1e6 for k in (0, 1))


def bench_baseline() -> dict:
    """The floor: a stdlib logging call whose handler does nothing."""
    log = _logger(logging.NullHandler())
    us, cpu_us = _app_us(log, 20_000)
    return {"us": us, "cpu_us": cpu_us, "rps": float("nan"), "dropped": 0, "proc_us": float("nan")}


def bench_plain_loki(sink: CountingServer) -> dict:
    import logging_loki
    handler = logging_loki.LokiHandler(url=sink.url + "/loki/api/v1/push", tags={"service": "payments"},
                                       version="1")
    log = _logger(handler)
    sink.reset()
    count, started, cpu, proc = 0, time.perf_counter(), time.thread_time(), time.process_time()
    while time.perf_counter() - started < DURATION:
        _log_call(log, count)
        count += 1
    elapsed, cpu, proc = time.perf_counter() - started, time.thread_time() - cpu, time.process_time() - proc
    handler.close()
    delivered = max(1, sink.count())
    return {"us": elapsed / count * 1e6, "cpu_us": cpu / count * 1e6, "rps": delivered / elapsed,
            "dropped": 0, "proc_us": proc / delivered * 1e6}


def bench_queue_loki(sink: CountingServer) -> dict:
    import logging_loki
    handler = logging_loki.LokiQueueHandler(queue.Queue(-1), url=sink.url + "/loki/api/v1/push",
                                            tags={"service": "payments"}, version="1")
    log = _logger(handler)
    _time_calls(log, 20)   # warm up (imports, first connection), as ofsre's handlers are
    sink.wait_for(20, timeout=10)
    sink.reset()
    started, proc = time.perf_counter(), time.process_time()
    app_us, cpu_us = _app_us(log, RECORDS)   # as many calls as each ofsre handler gets
    calls, during_calls = time.perf_counter() - started, sink.count()
    complete = sink.wait_for(RECORDS, timeout=PEER_DRAIN)   # a few hundred per second: time-boxed
    elapsed, proc = time.perf_counter() - started, time.process_time() - proc
    delivered = max(1, sink.count())
    with handler.queue.mutex:   # stop without waiting for the rest to trickle out
        handler.queue.queue.clear()
    handler.listener.stop()
    handler.handler.close()
    # Process CPU per delivered record: the app-side work of all the calls is counted against the
    # records it delivered in the time box, so subtract the app thread's share of the undelivered ones.
    app_cpu_undelivered = cpu_us * 1e-6 * (RECORDS - delivered)
    result = {"us": app_us, "cpu_us": cpu_us, "rps": RECORDS / elapsed, "dropped": 0,
              "proc_us": max(0.0, proc - app_cpu_undelivered) / delivered * 1e6, "note": ""}
    if not complete:
        # During the calls the app's loop holds the GIL and its thread delivers little; after them it
        # drains at its own pace. The whole lot's time: the calls, then the rest at that pace.
        drained = delivered - during_calls
        pace = drained / (elapsed - calls) if drained > 0 else 1.0 / max(elapsed - calls, 1e-9)
        total = calls + (RECORDS - during_calls) / pace
        result["rps"] = RECORDS / total
        result["note"] = (
            f"{QUEUED}: the {RECORDS:,} calls took {calls:.1f} s ({during_calls:,} delivered meanwhile), "
            f"then its thread delivered {drained:,} in the {elapsed - calls:.1f} s box ({pace:,.0f}/s): all "
            f"{RECORDS:,} would take ~{total:,.0f} s, so its records/s is {RECORDS:,} / {total:,.0f} s "
            f"(projected at that pace; {delivered / elapsed:,.0f}/s counted within the box alone; "
            "BENCH_PEER_DRAIN=900 waits for all of them)")
    return result


def bench_ofsre(sink: CountingServer, make: Callable[[str], logging.Handler]) -> dict:
    from prometheus_client import CollectorRegistry
    handler = make(sink.url, registry=CollectorRegistry(), queue_records=RECORDS + 1,
                   queue_bytes=512 * 1024 * 1024)
    log = _logger(handler)
    _time_calls(log, 200)   # warm up: imports, first connection
    handler.flush(30)
    sink.reset()
    child = getattr(handler._shipper, "_child", None)   # shipper_process=True: its CPU counts too
    child_cpu = _child_cpu(child)
    started, proc = time.perf_counter(), time.process_time()
    app_us, cpu_us = _app_us(log, RECORDS)
    handler.flush(120)
    complete = sink.wait_for(RECORDS, timeout=120)
    elapsed, proc = time.perf_counter() - started, time.process_time() - proc
    if child is not None and child is getattr(handler._shipper, "_child", None):
        proc += _child_cpu(child) - child_cpu
    elif child is not None:
        _progress(f"{type(handler).__name__}: the shipper process was restarted; its CPU is not counted")
    stats = handler.stats()
    handler.close(timeout=5)
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    if not complete:
        _progress(f"{type(handler).__name__}: sink counted {sink.count()} of {RECORDS}")
    return {"us": app_us, "cpu_us": cpu_us, "rps": RECORDS / elapsed, "dropped": dropped,
            "proc_us": proc / RECORDS * 1e6}


def _child_cpu(child: object) -> float:
    """CPU seconds (user + system) of a shipper process so far; 0 without one."""
    if child is None:
        return 0.0
    with open(f"/proc/{child.pid}/stat") as stat:   # type: ignore[attr-defined]
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ofsre_variants() -> dict[str, Callable[..., logging.Handler]]:
    """The ofsre handlers ``BENCH_VARIANTS`` names, by row name."""
    from ofsre.exporters.datadog import DatadogHandler
    from ofsre.exporters.elastic import ElasticHandler
    from ofsre.exporters.loki import LokiHandler
    every = {
        "loki": (THREAD, lambda url, **kw: LokiHandler(url, service="payments", env="bench",
                                                       shipper_process=False, **kw)),
        "loki_process": (PROCESS, lambda url, **kw: LokiHandler(url, service="payments", env="bench",
                                                                shipper_process=True, **kw)),
        "datadog": ("ofsre DatadogHandler", lambda url, **kw: DatadogHandler(
            "bench-key", url=url + "/api/v2/logs", service="payments", env="bench", **kw)),
        "elastic": ("ofsre ElasticHandler", lambda url, **kw: ElasticHandler(url, service="payments",
                                                                             env="bench", **kw)),
    }
    unknown = set(VARIANTS) - set(every)
    if unknown:
        raise SystemExit(f"BENCH_VARIANTS: unknown {sorted(unknown)}; use {', '.join(every)}")
    return dict(every[key] for key in every if key in VARIANTS)


THREAD, PROCESS = "ofsre LokiHandler", "ofsre LokiHandler shipper_process"
FLOOR, PLAIN, QUEUED = ("stdlib logging call, NullHandler (floor)", "python-logging-loki LokiHandler",
                         "python-logging-loki LokiQueueHandler")


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("inf")


def _row(name: str, r: dict, floor: dict, queued: dict, plain: dict) -> str:
    cells = [f"{name:<38}"]
    for key in ("us", "cpu_us"):
        above, queued_above = r[key] - floor[key], queued[key] - floor[key]
        cells.append(f"{r[key]:>6.1f} {above:>6.1f} {_ratio(r[key], queued[key]):>5.2f} "
                     f"{_ratio(above, queued_above):>5.2f}")
    if r["rps"] != r["rps"]:   # NaN: not measured
        cells.append(f"{'-':>9} {'-':>7} {'-':>7} {'-':>8} {r['dropped']:>7}")
    else:
        cells.append(f"{r['rps']:>9.0f} {_ratio(r['rps'], queued['rps']):>6.0f}x "
                     f"{_ratio(r['rps'], plain['rps']):>6.0f}x {r['proc_us']:>8.1f} {r['dropped']:>7}")
    return " ".join(cells)


def _profile_lines(make: Callable[..., logging.Handler], count: int = 5000) -> list[str]:
    """Where one record's CPU goes on ofsre's side: the app thread's capture and the worker's encode."""
    import cProfile
    import io
    import pstats

    from prometheus_client import CollectorRegistry

    from ofsre.exporters._capture import capture
    from ofsre.exporters._process import capture_frame

    handler = make("http://127.0.0.1:9", registry=CollectorRegistry())
    try:
        log = _logger(logging.NullHandler())
        record = log.makeRecord(log.name, logging.INFO, __file__, 1, "payment %s settled for %s",
                                ("pay-1", "10.00"), None, extra={"payment_id": "pay-1"})
        shipper = handler._shipper
        started = time.thread_time()
        captured = [capture(record) for _ in range(count)]
        capture_us = (time.thread_time() - started) / count * 1e6
        started = time.thread_time()
        for _ in range(count):
            capture_frame(record)
        frame_us = (time.thread_time() - started) / count * 1e6
        started = time.thread_time()
        for item in captured:
            shipper.encode(item)
        encode_us = (time.thread_time() - started) / count * 1e6
        profiler = cProfile.Profile()
        profiler.enable()
        for item in captured[:2000]:
            shipper.encode(item)
        profiler.disable()
    finally:
        handler.close(timeout=0.1)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    table = [line for line in out.getvalue().splitlines() if line.strip()][-11:]
    return [f"where one record's CPU goes (ofsre LokiHandler, thread CPU, no GIL contention): app thread "
            f"capture {capture_us:.1f} us; shipper thread encode (redaction + JSON) {encode_us:.1f} us, "
            f"plus gzip and HTTP per batch;",
            "in one process both hold the GIL, so the encode competes with the app's logging loop;",
            f"with shipper_process=True the app thread's capture is a frame ({frame_us:.1f} us) and the "
            "encode runs in the child process.",
            "profile of the shipper's encode (2,000 records, cProfile, top 10 by own time):",
            *("  " + line for line in table)]


def _goal_lines(title: str, ours: dict, floor: dict, queued: dict) -> tuple[list[str], bool]:
    """The issue's two goals for one ofsre Loki variant, and whether both are met."""
    throughput = _ratio(ours["rps"], queued["rps"])
    wall, cpu = (_ratio(ours[k], queued[k]) for k in ("us", "cpu_us"))
    wall_above, cpu_above = (_ratio(ours[k] - floor[k], queued[k] - floor[k]) for k in ("us", "cpu_us"))
    lines = [
        f"{'goal (' + title + ')':<52} {'measured':>10} {'target':>9} {'met':>4}",
        f"{f'records/s vs LokiQueueHandler ({RECORDS:,} records)':<52} {throughput:>9.0f}x {'>= 100x':>9} "
        f"{'yes' if throughput >= 100 else 'NO':>4}",
        f"{'app wall us/call above the floor vs LokiQueueHandler':<52} {wall_above:>10.2f} {'<= 0.33':>9} "
        f"{'yes' if wall_above <= 1 / 3 else 'NO':>4}",
        f"{'  (total wall us/call vs LokiQueueHandler)':<52} {wall:>10.2f}",
        f"{'  (app CPU us/call above the floor vs LokiQueueHandler)':<52} {cpu_above:>10.2f}",
        f"{'  (app CPU us/call vs LokiQueueHandler)':<52} {cpu:>10.2f}",
        f"{'CPU us per record (all processes): ofsre / LokiQueueHandler':<52} "
        f"{ours['proc_us']:>5.1f} / {queued['proc_us']:.0f}",
        f"{'  against log-backends.md figures (423/s, 38 us)':<52} {ours['rps'] / DOC_PLAIN_RPS:>9.0f}x "
        f"{ours['us'] / DOC_QUEUE_US:>10.2f}",
        "",
    ]
    return lines, throughput >= 100 and wall_above <= 1 / 3


def _table(results: dict[str, dict]) -> str:
    floor, plain, queued = results[FLOOR], results[PLAIN], results[QUEUED]
    lines = [
        f"{'':<38} {'wall us per log call':^26} {'app-thread CPU us per call':^26} {'end to end':^44}",
        f"{'variant':<38} {'total':>6} {'>floor':>6} {'xLQH':>5} {'xLQH':>5} "
        f"{'total':>6} {'>floor':>6} {'xLQH':>5} {'xLQH':>5} {'records/s':>9} {'xLQH':>7} {'xplain':>7} "
        f"{'CPU us/r':>8} {'dropped':>7}",
    ]
    lines += [_row(name, r, floor, queued, plain) for name, r in results.items()]
    lines += [
        "",
        "xLQH: ratio to python-logging-loki's LokiQueueHandler (first: total, second: above the floor);",
        "xplain: records/s ratio to python-logging-loki's LokiHandler, same run and sink;",
        "CPU us/r: CPU of the whole process (app and shipper threads), plus the shipper process's with",
        "shipper_process=True, per record delivered.",
        f"ofsre ran {RECORDS:,} records per handler, every one delivered; python-logging-loki's "
        f"LokiHandler is time-boxed to {DURATION:g} s of calls (one POST per call);",
        queued.get("note") or f"{QUEUED}: all {RECORDS:,} records delivered.",
        "",
    ]
    thread_met = True
    for name, title in ((THREAD, "ofsre LokiHandler"), (PROCESS, "LokiHandler shipper_process=True")):
        if name in results:
            goal_lines, met = _goal_lines(title, results[name], floor, queued)
            lines += goal_lines
            if name == THREAD:
                thread_met = met
    lines += [
        "ofsre's app thread: the floor + capture (message, context ids, exception text, extras snapshot)",
        "+ enqueue; its worker thread redacts, encodes, batches and sends. With shipper_process=True the",
        "capture is a marshal frame and a child process does the rest. LokiQueueHandler's app thread:",
        "the floor + format + copy + enqueue (no redaction, no context ids).",
    ]
    if not thread_met:
        lines += ["", *_profile_lines(_ofsre_variants()[THREAD])]
    return "\n".join(lines) + "\n"


def run() -> str:
    """Run every variant once against one sink process; return the table."""
    sink = CountingServer(SINK_ANSWER, "the sink server")
    results: dict[str, dict] = {FLOOR: bench_baseline()}
    try:
        _progress(PLAIN)
        results[PLAIN] = bench_plain_loki(sink)
        _progress(QUEUED)
        results[QUEUED] = bench_queue_loki(sink)
        for name, make in _ofsre_variants().items():
            _progress(name)
            results[name] = bench_ofsre(sink, make)
    finally:
        sink.close()
    return _table(results)


if __name__ == "__main__":
    print(run())
