"""The whole platform as real processes on loopback, against PostgreSQL (marker ``e2e``).

``platform`` starts, once per session, exactly what production runs:

    python -m ofsre.platform.run migrate
    python -m ofsre.platform.run {consents,accounts,payments,worker} --port 0 --port-file …
    python -m ofsre.platform.run gateway …      (mTLS via a forwarded header, trusted proxy 127.0.0.1)

with the database queue on a database of its own, a catalog copy whose baixa-tier TPM is
tiny (so the 429 test is quick, and the limit still comes from the catalog), and every
process exporting spans over OTLP/HTTP to :class:`OtlpReceiver`, a small in-test collector
that decodes ``ExportTraceServiceRequest`` protobufs, and shipping its logs with
``OFSRE_LOG_SHIPPER=loki`` to the fake Loki of the exporter tests (which validates every push).
At the end every process gets SIGTERM and must shut down gracefully.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ofsre.platform.guard import GATEWAY_SECRET_HEADER
from ofsre.platform.runtime.simulation import SimulatedBank

from ...exporters.exporter_fakes import FakeBackend
from ...http_stub import HttpStub, Reply, Request
from ..conftest import scratch_database

SERVICES = ("consents", "accounts", "payments", "worker")
E2E_BAIXA_TPM = 4
START_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


# --- OTLP/HTTP receiver -------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str


class OtlpReceiver:
    """Collects the spans every process exports to ``POST /v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self.stub = HttpStub(self._respond, methods=("POST",), name="otlp-receiver")
        self.url = self.stub.url

    def _respond(self, request: Request) -> Reply:
        raw = request.body
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        self._collect(ExportTraceServiceRequest.FromString(raw))
        body = ExportTraceServiceResponse().SerializeToString()
        return 200, {"content-type": "application/x-protobuf"}, body

    def _collect(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    found.append(Span(attrs.get("service.name", "?"), s.name, s.kind, s.trace_id.hex(),
                                      s.span_id.hex(), s.parent_span_id.hex()))
        with self._lock:
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.stub.close()


# --- processes --------------------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_process(name: str, env: dict[str, str], workdir: Path, *, scheme: str = "http") -> Process:
    """``python -m ofsre.platform.run <name> --port 0``; waits for the port file and /readyz (or /healthz)."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log = workdir / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "ofsre.platform.run", name, "--host", "127.0.0.1",
                             "--port", "0", "--port-file", str(port_file)], env=env, cwd=workdir,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return Process(name, proc, int(port_file.read_text()), log)


def stop_processes(processes: list[Process], timeout_s: float = 30) -> dict[str, bool]:
    """SIGTERM each process; ``name → stopped gracefully``.

    Graceful means: it ended by itself within ``timeout_s`` (uvicorn re-raises the SIGTERM it
    handled, so the code is 0 or -SIGTERM) after its lifespan shutdown completed.
    """
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    result = {}
    for p in processes:
        try:
            code = p.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            code = None
        result[p.name] = code in (0, -signal.SIGTERM) and "Application shutdown complete" in p.log.read_text(
            errors="replace")
    return result


def wait_ready(process: Process, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(process.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} never became ready:\n{process.tail()}")


@dataclass
class Platform:
    gateway: Process
    services: dict[str, Process]
    receiver: OtlpReceiver
    workdir: Path
    env: dict[str, str]
    client_ca: Path
    catalog: Path
    loki: FakeBackend
    secret: str
    processes: list[Process] = field(default_factory=list)

    def url(self, name: str) -> str:
        return self.gateway.url if name == "gateway" else self.services[name].url

    @property
    def module_headers(self) -> dict[str, str]:
        """What the gateway adds when it calls a module (tests that call one directly send it too)."""
        return {GATEWAY_SECRET_HEADER: self.secret}

    @property
    def bank(self) -> SimulatedBank:
        """The customer's simulated decision, made on the modules as the demo makes it."""
        return SimulatedBank({name: [p.url] for name, p in self.services.items()}, self.secret)


def base_env(database_url: str, workdir: Path, receiver: OtlpReceiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFSRE_", "OTEL_"))}
    env.update({
        "OFSRE_DATABASE_URL": database_url, "OFSRE_DATA_DIR": str(workdir), "OFSRE_QUEUE_BACKEND": "db",
        "OFSRE_QUEUE_POLL_MAX_SECONDS": "0.2", "OFSRE_SETTLEMENT_LATENCY_MS": "50",
        "OFSRE_WORKER_CONCURRENCY": "2",
        "OFSRE_DB_POOL_SIZE": "3", "OFSRE_SHUTDOWN_TIMEOUT_S": "10", "OFSRE_LOG_LEVEL": "INFO",
        # short, so the hostile tests' slow requests are answered quickly (408)
        "OFSRE_BODY_TIMEOUT_S": "1", "OFSRE_HEADER_TIMEOUT_S": "2",
        # payments' links.self must match payments 4.0.0's pattern (an https host name), not 127.0.0.1
        "OFSRE_PUBLIC_URL": "https://api.ofsre.test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    })
    return env


@pytest.fixture(scope="session")
def e2e_database_url(tmp_path_factory):
    with scratch_database(tmp_path_factory.mktemp("e2e-data")) as url:
        yield url


@pytest.fixture(scope="session")
def platform(e2e_database_url, tmp_path_factory, pki, catalog_writer):
    workdir = tmp_path_factory.mktemp("platform")
    receiver = OtlpReceiver()
    loki = FakeBackend("loki")
    env = base_env(e2e_database_url, workdir, receiver)
    env.update({"OFSRE_LOG_SHIPPER": "loki", "OFSRE_LOKI_URL": loki.url, "OFSRE_LOG_BATCH_WAIT": "0.2"})
    client_ca = pki.write(workdir)
    catalog = catalog_writer(workdir, baixa_tpm=E2E_BAIXA_TPM)
    env["OFSRE_CATALOG"] = str(catalog)
    secret = secrets.token_urlsafe(24)
    env["OFSRE_GATEWAY_SECRET"] = secret  # the gateway sends it, the modules require it
    subprocess.run([sys.executable, "-m", "ofsre.platform.run", "migrate"], env=env, cwd=workdir, check=True,
                   capture_output=True, timeout=120)
    processes: list[Process] = []
    try:
        services = {}
        for name in SERVICES:
            services[name] = start_process(name,
                                           {**env, "OFSRE_SERVICE": name, "OFSRE_SIMULATION_ROUTES": "on"},
                                           workdir)
            processes.append(services[name])
        upstreams = {name: [services[name].url] for name in ("consents", "accounts", "payments")}
        (workdir / "upstreams.json").write_text(json.dumps(upstreams))
        gateway_env = {**env, "OFSRE_SERVICE": "gateway",
                       "OFSRE_UPSTREAMS_FILE": str(workdir / "upstreams.json"),
                       "OFSRE_MTLS": "on", "OFSRE_CLIENT_CA_FILE": str(client_ca),
                       "OFSRE_TRUSTED_PROXIES": "127.0.0.1/32", "OFSRE_GATEWAY_TPS_LIMIT": "10000"}
        gateway = start_process("gateway", gateway_env, workdir)
        processes.append(gateway)
        for p in processes:
            wait_ready(p)
        yield Platform(gateway, services, receiver, workdir, env, client_ca, catalog, loki, secret, processes)
    finally:
        graceful = stop_processes(processes)
        receiver.close()
        loki.close()
    unclean = [name for name, ok in graceful.items() if not ok]
    assert not unclean, f"processes did not shut down gracefully on SIGTERM: {unclean}"
