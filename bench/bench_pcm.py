"""What do PCM reports cost? Capture overhead per request, and sender throughput to a local PCM.

1. **Capture overhead.** The same FastAPI app (one catalog endpoint whose handler names the
   verified client with ``identify_client``, as the gateway does) is served by uvicorn, one
   worker, in a subprocess, instrumented by ofsre with tracing off, twice: ``pcm_off`` and
   ``pcm_on`` (every request queues a SERVER report; the writer thread stores them in SQLite
   in a temporary directory). Load: ``wrk`` (1 thread) or, without it, the Python keep-alive
   client of ``_common``. Rounds interleaved, best of each kept. Target:
   ``pcm_on / pcm_off >= 0.97``. The same two apps called in-process (no sockets) give the
   cost in microseconds per request (rounds interleaved, best kept), which is less noisy.
2. **Sender throughput.** ``BENCH_PCM_REPORTS`` reports (default 100,000) are staged in a store
   as the capture writes them, then one :class:`~ofsre.exporters.pcm.sender.Sender` delivers them
   to the local PCM (``ofsre.exporters.pcm.mock``, which validates every report, in its own
   process), 5,000 per request with a token. Target: >= 20,000 reports/s.

The machine is shared: figures are noisy; read them as orders of magnitude and ratios.
Knobs: BENCH_DURATION (s per measured run, default 3), BENCH_WARMUP (1), BENCH_ROUNDS (2),
BENCH_CONNECTIONS (16), BENCH_PCM_REPORTS (100000).
``python bench/bench_pcm.py`` runs it alone; ``--serve VARIANT DIR`` serves one variant.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import asgi_scope, best_us, call_asgi, load_generator, wait_port

ROUTE = "/open-banking/accounts/v2/accounts/{accountId}/balances"
PATH = ROUTE.replace("{accountId}", "acc-1")
CAPTURE_TARGET = 0.97
SENDER_TARGET = 20_000
ORG = "11111111-1111-4111-8111-111111111111"
CLIENT_ORG = "22222222-2222-4222-8222-222222222222"


def build_app(variant: str, directory: str):
    from fastapi import FastAPI
    from opentelemetry.trace import NoOpTracerProvider
    from prometheus_client import CollectorRegistry

    from ofsre.instrumentation import instrument_app
    from ofsre.instrumentation.pcm import PcmCapture, identify_client

    app = FastAPI()

    @app.get(ROUTE)
    async def balances(accountId: str):  # noqa: N803 - the Open Finance parameter name
        identify_client(CLIENT_ORG, consentId="urn:bank:consent-1")
        return {"data": {"accountId": accountId, "availableAmount": {"amount": "100.00", "currency": "BRL"}},
                "links": {"self": PATH}, "meta": {"requestDateTime": "2025-01-01T00:00:00Z"}}

    registry = CollectorRegistry()
    pcm = PcmCapture("bench", org_id=ORG, store=Path(directory) / "reports.db", registry=registry) \
        if variant == "pcm_on" else False
    return instrument_app(app, "bench", registry=registry, tracer_provider=NoOpTracerProvider(), pcm=pcm,
                          logs=False)


def serve(variant: str, directory: str) -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(build_app(variant, directory), log_level="warning", access_log=False,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def measure(variant: str, seconds: float, warmup: float, connections: int, directory: str) -> float:
    load, _ = load_generator()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, directory], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        wait_port(port, f"{variant} did not start")
        url = f"http://127.0.0.1:{port}{PATH}"
        load(url, warmup, connections)
        return load(url, seconds, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def in_process_us(directory: str, requests: int = 3000, rounds: int = 4) -> dict[str, float]:
    """Microseconds per request of each variant, called in-process; rounds interleaved, best kept."""
    apps = {variant: build_app(variant, directory) for variant in ("pcm_off", "pcm_on")}
    best = {variant: float("inf") for variant in apps}
    for _ in range(rounds):
        for variant, app in apps.items():
            best[variant] = min(best[variant], _per_request_us(app, requests))
    return best


def _per_request_us(app, requests: int) -> float:
    import asyncio

    scope = asgi_scope(PATH, str(uuid.uuid4()))
    asyncio.run(call_asgi(app, scope, 300))

    def requests_flushed():
        asyncio.run(call_asgi(app, scope, requests))
        capture = getattr(getattr(app, "build_middleware_stack", None), "ofsre_middleware", None)
        if capture is not None and capture._pcm is not None:
            capture._pcm.flush(30)

    # CPU time of the whole process (the writer thread included): on a shared machine it is far less
    # inflated by other engineers' load than wall time. The writer's last flush is waited for too.
    return best_us(requests_flushed, requests, rounds=1, clock=time.process_time)


def _rows(count: int) -> list[tuple]:
    """Store rows (``store.COLUMNS``) of ``count`` SERVER reports, one a second up to now."""
    from ofsre.exporters.pcm.store import brasilia_day

    now = time.time()
    info = '{"consentId":"urn:bank:consent-1"}'
    return [("private", "SERVER", brasilia_day(now - count + i), now - count + i, ROUTE, "GET", 200, 120,
             str(uuid.uuid4()), CLIENT_ORG, ORG, None, info, None, None) for i in range(count)]


def sender_run(count: int, directory: str) -> tuple[float, float, int]:
    """Reports/s to the local PCM (wall clock, and per second of the sender's own CPU), and the requests."""
    import logging

    from prometheus_client import CollectorRegistry

    from ofsre.exporters.pcm.sender import Sender, SenderOptions
    from ofsre.exporters.pcm.store import ReportStore

    logging.getLogger("httpx").setLevel(logging.WARNING)   # one INFO line per request otherwise
    store = ReportStore(Path(directory) / "send.db")
    rows = _rows(count)
    for start in range(0, count, 5000):   # staged, as the capture writes them: the sender indexes them too
        store.stage(rows[start:start + 5000])
    port_file = Path(directory) / "pcm.port"
    mock = subprocess.Popen([sys.executable, "-m", "ofsre.exporters.pcm.mock", "--port", "0", "--port-file",
                             str(port_file)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or mock.poll() is not None:
                raise RuntimeError("the local PCM did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        options = SenderOptions(url=url, token_url=url + "/token/", client_id="ofsre", client_secret="secret")
        sender = Sender(store, options, registry=CollectorRegistry())
        try:
            started, cpu = time.perf_counter(), time.process_time()
            if not sender.drain(300):
                raise RuntimeError("the sender did not empty the store")
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            sender.close()
        delivered = store.counts_by_state()["delivered"]
        if delivered != count:
            raise RuntimeError(f"{delivered} of {count} reports delivered")
        return count / elapsed, count / cpu, sender.stats["requests"]
    finally:
        mock.terminate()
        mock.wait(timeout=15)
        store.close()


def run() -> str:
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    warmup = float(os.environ.get("BENCH_WARMUP", "1"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "16"))
    count = int(os.environ.get("BENCH_PCM_REPORTS", "100000"))
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pcm-") as directory:
        for r in range(rounds):
            for variant in ("pcm_off", "pcm_on"):
                rps = measure(variant, seconds, warmup, connections, directory)
                print(f"round {r + 1} {variant}: {rps:,.0f} req/s", file=sys.stderr, flush=True)
                best[variant] = max(best.get(variant, 0.0), rps)
        us = in_process_us(directory)
        print(f"sending {count:,} reports to the local PCM", file=sys.stderr, flush=True)
        per_second, per_cpu_second, requests = sender_run(count, directory)
    _, generator = load_generator()
    ratio = best["pcm_on"] / best["pcm_off"]
    lines = [f"capture: FastAPI + uvicorn (1 worker), ofsre without tracing, GET {ROUTE}, {generator}, "
             f"{connections} connections, {seconds:g} s x {rounds} rounds (best)",
             f"{'variant':<10}{'req/s':>10}{'ratio':>8}",
             f"{'pcm_off':<10}{best['pcm_off']:>10,.0f}{1:>8.2f}",
             f"{'pcm_on':<10}{best['pcm_on']:>10,.0f}{ratio:>8.2f}  target >= {CAPTURE_TARGET:.2f}: "
             f"{'met' if ratio >= CAPTURE_TARGET else 'MISSED'}",
             f"in-process, CPU of the whole process (best of 4 interleaved): {us['pcm_off']:.1f} us/request "
             f"without capture, {us['pcm_on']:.1f} with (+{us['pcm_on'] - us['pcm_off']:.1f} us: the enqueue "
             f"and the writer thread's rows and staged batch), ratio {us['pcm_off'] / us['pcm_on']:.2f}",
             "",
             f"sender: {count:,} reports from the SQLite store to the local PCM (own process), "
             f"{requests} requests of <= 5,000",
             f"{per_second:,.0f} reports/s wall clock  target >= {SENDER_TARGET:,}: "
             f"{'met' if per_second >= SENDER_TARGET else 'MISSED'}",
             f"{per_cpu_second:,.0f} reports per second of the sender's own CPU (the local PCM's parsing and "
             f"validation run in its own process)",
             "(shared 2-core machine: noisy figures)"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        print(run())
