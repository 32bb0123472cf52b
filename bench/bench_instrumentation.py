"""What does instrumentation cost a FastAPI service? Throughput of one JSON endpoint, five ways.

The same FastAPI app (one catalog endpoint returning a small JSON document) is served by
uvicorn, one worker, on a loopback port, in a subprocess, instrumented as:

  bare            nothing
  ofsre           ofsre.instrumentation.instrument_app: metrics, 100 % sampled traces into a
                  BatchSpanProcessor whose exporter discards, interaction id and log context
  instrumentator  prometheus-fastapi-instrumentator (instrument + expose)
  otel            opentelemetry FastAPIInstrumentor, same discarding BatchSpanProcessor
  both            instrumentator + otel

and more ofsre rows that show where its cost goes: ``ofsre_10pct`` / ``ofsre_0pct`` (traces
sampled at 10 % / 0 %) and ``ofsre_no_traces`` (metrics, interaction id and log context only:
the tracer is OpenTelemetry's no-op); and two rows that export every span for real:
``ofsre_otlp`` and ``otel_otlp`` (FastAPIInstrumentor), each into a BatchSpanProcessor with an
OTLP/HTTP exporter pointed at a receiver process of the bench, which decodes every request and
counts its spans; the server counts the spans it ended, and the table says whether all arrived.

Load: ``wrk`` (one thread, 16 keep-alive connections; Debian package ``wrk``) in its own
process, or when wrk is missing a Python keep-alive client in its own process (slower: it
then shares the CPU with the server and the ratios mean less). Every request carries a
valid ``x-fapi-interaction-id``, as Open Finance clients do. Each variant gets a warm-up
run, then a measured run; the rounds are interleaved (every other one in reverse order), and
the table gives the median, the min-max spread and each round's ratio to that round's bare
run, because the machine is shared. Goal: ofsre / bare >= 0.90 (median ratio); when missed,
a profile of the telemetry code follows.

Then the in-process breakdown: the same app called directly (no server, no sockets), in
wall-clock microseconds (noisy on a shared machine) and in *instructions per request* under
valgrind's callgrind (repeatable whatever else runs). The 0 % sampled goal (within 2 µs of
no tracer) is judged on the instruction difference, converted to microseconds at the rate
this machine ran the bare app.

Knobs: BENCH_DURATION (s per measured run, default 5), BENCH_WARMUP (s, 2), BENCH_ROUNDS (3),
BENCH_CONNECTIONS (16), BENCH_VARIANTS (comma list, default all), BENCH_CG_REQUESTS (requests
per callgrind measurement, 200).
``python bench/bench_instrumentation.py`` runs it alone;
``python bench/bench_instrumentation.py --serve VARIANT`` serves one variant and prints its port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from statistics import median

from _common import INTERACTION_ID, CountingServer, asgi_scope, best_us, call_asgi, load_generator, wait_port

VARIANTS = ("bare", "ofsre", "instrumentator", "otel", "both", "ofsre_10pct", "ofsre_0pct", "ofsre_no_traces",
            "ofsre_otlp", "otel_otlp")
# Rows that export every span for real, OTLP/HTTP (protobuf) to the bench's own receiver.
OTLP_VARIANTS = ("ofsre_otlp", "otel_otlp")
ROUTE = "/open-banking/accounts/v2/accounts/{accountId}/balances"
PATH = ROUTE.replace("{accountId}", "acc-1")
TARGET = 0.90


def _discarding_provider(ratio: float = 1.0):
    """A tracer provider sampling ``ratio`` into a BatchSpanProcessor whose exporter drops the spans."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from ofsre.instrumentation.tracing import build_tracer_provider

    class Discard(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    return build_tracer_provider("bench", exporter=Discard(), sampler_ratio=ratio)


def _otlp_provider():
    """100 % sampling into a BatchSpanProcessor exporting OTLP/HTTP to the bench's receiver,
    plus a processor that counts the spans ended here (the receiver must count as many)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import SpanProcessor

    from ofsre.instrumentation.tracing import build_tracer_provider

    class Count(SpanProcessor):
        ended = 0

        def on_end(self, span):
            Count.ended += 1

    provider = build_tracer_provider("bench",
                                     exporter=OTLPSpanExporter(endpoint=os.environ["BENCH_OTLP_URL"]),
                                     sampler_ratio=1.0)
    provider.add_span_processor(Count())
    provider.ended = lambda: Count.ended
    return provider


def _unprocessed_provider():
    """A provider sampling everything but with no span processor: spans are made, then dropped."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))


def build_app(variant: str):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(ROUTE)
    async def balances(accountId: str):  # noqa: N803 - the Open Finance parameter name
        return {"data": {"accountId": accountId, "availableAmount": {"amount": "100.00", "currency": "BRL"}},
                "links": {"self": PATH}, "meta": {"requestDateTime": "2025-01-01T00:00:00Z"}}

    if variant.startswith("ofsre"):
        from opentelemetry.trace import NoOpTracerProvider

        from ofsre.instrumentation import instrument_app

        provider = {"ofsre": _discarding_provider, "ofsre_10pct": lambda: _discarding_provider(0.1),
                    "ofsre_0pct": lambda: _discarding_provider(0.0), "ofsre_otlp": _otlp_provider,
                    "ofsre_no_traces": NoOpTracerProvider}[variant]()
        instrument_app(app, "bench", tracer_provider=provider)
        app.state.provider = provider
    if variant in ("instrumentator", "both"):
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    if variant in ("otel", "both", "otel_otlp"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        provider = _otlp_provider() if variant == "otel_otlp" else _discarding_provider()
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        app.state.provider = provider
    return app


def serve(variant: str) -> None:
    """Serve ``variant`` on a free loopback port; print the port on stdout first."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    app = build_app(variant)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a no-op handler of ours
    # lets the OTLP rows flush and report after it (uvicorn installs its own while serving).
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    if variant in OTLP_VARIANTS:   # after SIGTERM: export what is queued, then say how many spans ended
        app.state.provider.shutdown()
        print(f"ended {app.state.provider.ended()}", flush=True)


class Server:
    """The variant's uvicorn in a subprocess, for the duration of a ``with`` block."""

    def __init__(self, variant: str):
        self.variant = variant

    def __enter__(self) -> str:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", self.variant],
                                     stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())
        wait_port(port, f"{self.variant}: server did not start")
        return f"http://127.0.0.1:{port}{PATH}"

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[str]:
        """Stop the server (SIGTERM: uvicorn shuts down cleanly); return what it printed after its port."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=120)
        return [line for line in (out or "").splitlines() if line.strip()]


# The OTLP receiver's answer to a POST (see _common.CountingServer): decode the request, count its spans.
OTLP_ANSWER = r"""
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                        ExportTraceServiceResponse)
OK = ExportTraceServiceResponse().SerializeToString()

def answer(path, body):
    request = ExportTraceServiceRequest.FromString(body)
    spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    return spans, 200, "application/x-protobuf", OK
"""


SPAN_CHECKS: list[str] = []   # "variant: N spans ended, N received" lines of the OTLP rows


def measure(variant: str, seconds: float, warmup: float, connections: int,
            receiver: CountingServer | None = None) -> float:
    load, _ = load_generator()
    if variant not in OTLP_VARIANTS:
        with Server(variant) as url:
            load(url, warmup, connections)
            return load(url, seconds, connections)
    receiver.reset()
    server = Server(variant)
    os.environ["BENCH_OTLP_URL"] = receiver.url + "/v1/traces"
    # Queue room for every span of the run: the row is about what exporting costs, and all must arrive.
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = "1000000"
    try:
        url = server.__enter__()
        load(url, warmup, connections)
        rps = load(url, seconds, connections)
    finally:
        lines = server.stop()
        os.environ.pop("OTEL_BSP_MAX_QUEUE_SIZE", None)
    ended = int(next(line.split()[1] for line in lines if line.startswith("ended ")))
    received = receiver.count()
    verdict = "all arrived" if received == ended else f"MISSING {ended - received}"
    SPAN_CHECKS.append(f"{variant}: {ended:,} spans ended, {received:,} received by the OTLP receiver: "
                       f"{verdict}")
    return rps


# -- where the time goes: the same app called in-process (no server, no sockets, no noise from the
# load generator), microseconds per request, best of a few rounds -------------------------------

_SCOPE = asgi_scope(PATH, INTERACTION_ID)


def _per_request_us(app, requests: int, rounds: int = 3) -> float:
    import asyncio

    asyncio.run(call_asgi(app, _SCOPE, 500))  # warm-up: route tables, label children, caches
    return best_us(lambda: asyncio.run(call_asgi(app, _SCOPE, requests)), requests, rounds)


def _span_alone_us(count: int = 20000) -> float:
    """One SDK span as the middleware makes it: 8 attributes, a status attribute, end."""
    from opentelemetry.trace import SpanKind

    tracer = _discarding_provider().get_tracer("bench")
    attributes = {"http.request.method": "GET", "http.route": ROUTE, "url.path": PATH, "url.scheme": "http",
                  "server.address": "127.0.0.1", "server.port": 8000, "fapi.interaction_id": INTERACTION_ID}

    def spans():
        for _ in range(count):
            span = tracer.start_span("GET " + ROUTE, None, SpanKind.SERVER, attributes)
            span.set_attribute("http.response.status_code", 200)
            span.end()

    return best_us(spans, count)


def cost_breakdown(requests: int = 3000) -> tuple[list[str], dict[str, float]]:
    from opentelemetry.trace import NoOpTracerProvider
    from prometheus_client import CollectorRegistry

    from ofsre.instrumentation import instrument_app

    def ofsre(provider):
        return instrument_app(build_app("bare"), "bench", registry=CollectorRegistry(),
                              tracer_provider=provider, logs=False)

    bare = _per_request_us(build_app("bare"), requests)
    rows = [("bare FastAPI app, called in-process", bare, "")]
    for label, provider in (("ofsre, no tracer (metrics, id, context)", NoOpTracerProvider()),
                            ("ofsre, traces sampled at 0 %", _discarding_provider(0.0)),
                            ("ofsre, traces sampled at 100 %", _discarding_provider(1.0)),
                            # Diagnostic only: the same sampled spans with no span processor, so the
                            # gap to the row above is what the BatchSpanProcessor (queue, worker
                            # thread, spans freed in batches) adds.
                            ("  same, no span processor (diagnostic)", _unprocessed_provider())):
        rows.append((label, _per_request_us(ofsre(provider), requests), "+"))
    lines = ["where the time goes (in-process ASGI calls, no server; wall-clock us per request, best of 3)"]
    for label, us, sign in rows:
        extra = f"  ({sign}{us - bare:.1f})" if sign else ""
        lines.append(f"  {label:<42}{us:>7.1f}{extra}")
    lines.append(f"  {'one OpenTelemetry SDK span alone':<42}{_span_alone_us():>7.1f}")
    keys = ("bare", "notrace", "sampled0", "sampled100", "unprocessed")
    return lines, {key: us for key, (_, us, _) in zip(keys, rows, strict=True)}


# -- instruction counts: the same in-process calls under valgrind's callgrind --------------------
# Wall-clock microseconds depend on whatever else the (shared) machine runs; the number of
# instructions a request executes does not. Each variant is run twice, N1 and N2 requests, with
# callgrind's instrumentation switched on around the loop only; (Ir(N2) - Ir(N1)) / (N2 - N1)
# is the cost of one request, the toggling overhead cancelled out.

CG_VARIANTS = (
    ("bare", "bare FastAPI app"),
    ("notrace", "ofsre, no tracer (metrics, id, context)"),
    ("sampled0", "ofsre, traces sampled at 0 %"),
    ("sampled100", "ofsre, traces sampled at 100 %"),
    ("unprocessed", "  same, no span processor (diagnostic)"),
    ("otel", "OpenTelemetry FastAPIInstrumentor, 100 %"),
)
CG_N1 = 50
CG_N2 = CG_N1 + int(os.environ.get("BENCH_CG_REQUESTS", "200"))


def _cg_app(variant: str):
    from opentelemetry.trace import NoOpTracerProvider
    from prometheus_client import CollectorRegistry

    from ofsre.instrumentation import instrument_app

    if variant == "bare":
        return build_app("bare")
    if variant == "otel":
        return build_app("otel")
    provider = {"notrace": NoOpTracerProvider, "sampled0": lambda: _discarding_provider(0.0),
                "sampled100": lambda: _discarding_provider(1.0),
                "unprocessed": _unprocessed_provider}[variant]()
    return instrument_app(build_app("bare"), "bench", registry=CollectorRegistry(), tracer_provider=provider,
                          logs=False)


def _callgrind_child(variants: list[str]) -> None:
    """Runs inside valgrind: one dump per (variant, request count)."""
    import asyncio

    def ctl(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)

    for variant in variants:
        app = _cg_app(variant)

        def loop(n, app=app):
            return call_asgi(app, _SCOPE, n)

        runner = asyncio.Runner()
        runner.run(loop(100))   # warm-up: route tables, label children, caches
        for n in (CG_N1, CG_N2):
            ctl("--zero")
            ctl("--instr=on")
            runner.run(loop(n))
            ctl("--instr=off")
            ctl("--dump", f"{variant}:{n}")
        runner.close()


def instruction_breakdown() -> tuple[list[str], dict[str, float]]:
    """Instructions per request of each variant (callgrind), or a line saying why not."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return ["instruction counts: valgrind is not installed (apt-get install valgrind)"], {}
    import glob
    import tempfile

    names = [v for v, _ in CG_VARIANTS]
    with tempfile.TemporaryDirectory(prefix="ofsre-callgrind-") as tmp:
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={tmp}/cg.out", sys.executable, __file__, "--callgrind",
                        *names],
                       capture_output=True, text=True, check=True, timeout=600)
        totals: dict[str, int] = {}
        for path in glob.glob(f"{tmp}/cg.out*"):
            text = open(path, encoding="utf-8").read()
            trigger = re.search(r"^desc: Trigger: Client Request: (\S+)|^desc: Trigger: dump (\S+)", text,
                                re.M)
            total = re.search(r"^totals: (\d+)", text, re.M)
            if trigger and total:
                totals[trigger.group(1) or trigger.group(2)] = int(total.group(1))
    per_request = {v: (totals[f"{v}:{CG_N2}"] - totals[f"{v}:{CG_N1}"]) / (CG_N2 - CG_N1) for v in names}
    bare = per_request["bare"]
    lines = [f"instructions per request (valgrind callgrind, in-process ASGI calls; repeatable whatever else "
             f"the machine runs; {CG_N2 - CG_N1} requests)"]
    for variant, label in CG_VARIANTS:
        extra = "" if variant == "bare" else f"  (+{per_request[variant] - bare:,.0f}, " \
                                             f"{per_request[variant] / bare:.2f}x bare)"
        lines.append(f"  {label:<42}{per_request[variant]:>10,.0f}{extra}")
    return lines, per_request


def telemetry_profile(variant: str = "sampled100", requests: int = 2000, top: int = 14) -> list[str]:
    """cProfile of the in-process calls, keeping only telemetry code (ofsre, OpenTelemetry,
    prometheus_client): where the time above the bare app goes."""
    import asyncio
    import cProfile
    import io
    import pstats

    app = _cg_app(variant)

    def loop(n):
        return call_asgi(app, _SCOPE, n)

    runner = asyncio.Runner()
    runner.run(loop(200))
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(loop(requests))
    profiler.disable()
    runner.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(r"instrumentation/|opentelemetry|prometheus_client", top)
    rows = [line for line in out.getvalue().splitlines() if re.match(r"\s+\d", line) or "ncalls" in line]
    return [f"profile of the telemetry code ({variant}, {requests} in-process requests, cProfile, "
            f"top {top} by own time; cProfile inflates small functions):",
            *("  " + row.strip()[:150] for row in rows)]


GOAL_0PCT_US = 2.0   # 0 % sampled within this many microseconds per request of no tracing


def run() -> str:
    seconds = float(os.environ.get("BENCH_DURATION", "5"))
    warmup = float(os.environ.get("BENCH_WARMUP", "2"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "16"))
    variants = [v for v in os.environ.get("BENCH_VARIANTS", ",".join(VARIANTS)).split(",") if v]
    if "bare" not in variants:
        variants.insert(0, "bare")
    SPAN_CHECKS.clear()
    load_before = os.getloadavg()[0]
    results: dict[str, list[float]] = {v: [] for v in variants}
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    with CountingServer(OTLP_ANSWER, "the OTLP receiver") as receiver:
        for r in range(rounds):
            # Interleaved, and every other round in reverse order, so a slow phase of the shared
            # machine is spread over every variant instead of landing on one.
            order = variants if r % 2 == 0 else variants[::-1]
            this_round = {}
            for variant in order:
                rps = measure(variant, seconds, warmup, connections, receiver)
                print(f"round {r + 1} {variant}: {rps:,.0f} req/s", file=sys.stderr, flush=True)
                this_round[variant] = rps
                results[variant].append(rps)
            for variant in variants:
                ratios[variant].append(this_round[variant] / this_round["bare"])
    _, generator = load_generator()
    lines = [f"FastAPI + uvicorn (1 worker), GET {ROUTE}, {generator}, {connections} connections, "
             f"{seconds:g} s x {rounds} interleaved rounds; load average {load_before:.1f} at start on "
             f"{os.cpu_count()} cores (a shared, busy machine: read the spread)",
             f"{'variant':<16}{'median req/s':>13}{'min-max':>17}{'vs bare (median, range)':>26}"]
    for variant in variants:
        got, rel = results[variant], ratios[variant]
        mark = ""
        if variant == "ofsre":
            verdict = "met" if median(rel) >= TARGET else "MISSED"
            mark = f"  goal >= {TARGET:.2f}: {verdict}"
        lines.append(f"{variant:<16}{median(got):>13,.0f}{f'{min(got):,.0f}-{max(got):,.0f}':>17}"
                     f"{f'{median(rel):.2f} ({min(rel):.2f}-{max(rel):.2f})':>26}{mark}")
    lines += ["", "ofsre_otlp / otel_otlp export every span OTLP/HTTP (protobuf) to a receiver process "
                  "in the bench:"]
    lines += [f"  {check}" for check in SPAN_CHECKS] or ["  (not run)"]
    if "ofsre" in ratios and median(ratios["ofsre"]) < TARGET:
        lines += ["", *telemetry_profile()]
    breakdown, per_us = cost_breakdown()
    instructions, per_request = instruction_breakdown()
    lines += ["", *breakdown, "", *instructions]
    if per_request:
        delta = per_request["sampled0"] - per_request["notrace"]
        # Instructions -> microseconds at the rate this machine ran the bare app in-process.
        us = delta / per_request["bare"] * per_us["bare"]
        verdict = "met" if us <= GOAL_0PCT_US else "MISSED"
        lines.append(f"  0 % sampled vs no tracer: +{delta:,.0f} instructions ~ {us:.1f} us at this "
                     f"machine's rate (wall-clock: {per_us['sampled0'] - per_us['notrace']:+.1f} us); "
                     f"goal <= {GOAL_0PCT_US:g} us: {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "--callgrind":
        _callgrind_child(sys.argv[2:])
    elif len(sys.argv) == 2 and sys.argv[1] == "--instructions":
        print("\n".join(instruction_breakdown()[0]))
    else:
        print(run())
