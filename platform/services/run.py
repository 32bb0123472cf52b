"""Start one platform service, or create the schema: the only way the platform's processes start.

::

    python -m ofsre.platform.run migrate                          # create tables (idempotent)
    python -m ofsre.platform.run accounts --host 127.0.0.1 --port 8102
    python -m ofsre.platform.run gateway --port 0 --port-file var/gateway.port

Services: gateway, consents, accounts, payments, worker. Each is one uvicorn process with one
worker, configured from the ``OFSRE_*`` environment (:class:`ofsre.platform.settings.Settings`).
``--port 0`` takes a free port; ``--port-file`` receives the bound port once the service has
started (lifespan done, socket accepting), which is also the moment to call it ready.

SIGTERM or SIGINT: uvicorn stops accepting, drains in-flight requests for up to
``OFSRE_SHUTDOWN_TIMEOUT_S``, then runs the lifespan's shutdown (consumer, queue, engine,
telemetry flush). The gateway serves TLS with client-certificate verification when
``OFSRE_TLS_CERT_FILE``/``OFSRE_TLS_KEY_FILE`` (and ``OFSRE_CLIENT_CA_FILE``) are set.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from ofsre.instrumentation._config import SERVICE

from .protocol import protocol_class
from .settings import SERVICES, SHARED_FD, Settings

__all__ = ["main", "serve", "migrate", "create_app"]

_log = logging.getLogger("ofsre.platform.run")


def create_app(service: str, settings: Settings | None = None) -> FastAPI:
    """``ofsre.platform.<service>.app.create_app(settings)``."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r} (known: {', '.join(SERVICES)})")
    return importlib.import_module(f"ofsre.platform.{service}.app").create_app(settings)


async def migrate(settings: Settings | None = None) -> None:
    """Create the services' tables and, for the database queue backend, the queue's (idempotent)."""
    from . import db
    from .queue import create_schema as create_queue_schema

    settings = settings or Settings.from_env()
    engine = db.create_engine(settings, service="migrate")
    try:
        await db.create_schema(engine)
        if settings.queue_backend == "db":
            await create_queue_schema(engine)
    finally:
        await engine.dispose()


def _setup_process_telemetry(service: str) -> None:
    """Logs, traces and log shipping for this process (never for an app built in a test)."""
    from ofsre.exporters import install_from_env
    from ofsre.instrumentation.logs import configure_logging
    from ofsre.instrumentation.tracing import setup_tracing

    os.environ.setdefault(SERVICE.name, service)  # for every reader of OFSRE_SERVICE in this process
    configure_logging(service)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per proxied call is noise
    setup_tracing(service)
    install_from_env(service)  # OFSRE_LOG_SHIPPER: none (stdout only), loki, datadog or elastic


def _protocol_options(service: str, settings: Settings) -> dict:
    """uvicorn's ``http=`` protocol with the request-head limits, and the gateway's own TLS listener."""
    if service != "gateway" or not settings.tls_cert_file:
        return {"http": protocol_class(settings)}
    from .gateway.tls import PeerCertificateProtocol

    if not settings.client_ca_file:
        raise SystemExit("OFSRE_TLS_CERT_FILE needs OFSRE_CLIENT_CA_FILE: clients must present a certificate")
    return {"ssl_certfile": str(settings.tls_cert_file),
            "ssl_keyfile": str(settings.tls_key_file) if settings.tls_key_file else None,
            "ssl_ca_certs": str(settings.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "http": protocol_class(settings, PeerCertificateProtocol)}


def _shared_socket() -> socket.socket | None:
    """The listening socket inherited as file descriptor ``OFSRE_SHARED_FD``: the local runtime
    opens the gateway port once and every gateway replica accepts from it (its stand-in for a
    Kubernetes Service). None when the variable is unset."""
    raw = SHARED_FD.from_env()
    if not raw:
        return None
    try:
        sock = socket.socket(fileno=int(raw))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"OFSRE_SHARED_FD={raw!r} is not an inherited listening socket: {exc}") from exc
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise SystemExit(f"OFSRE_SHARED_FD={raw!r} is not a listening TCP socket")
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once start-up (lifespan included) succeeded."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def serve(service: str, host: str = "127.0.0.1", port: int = 8000, *, port_file: Path | None = None,
          settings: Settings | None = None, log_level: str = "info") -> None:
    """Run ``service`` until SIGTERM/SIGINT (blocking)."""
    settings = settings or Settings.from_env()
    _setup_process_telemetry(service)
    app = create_app(service, settings)
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on", log_config=None, log_level=log_level, access_log=False,
        # The gateway decides itself which peers may speak for a client (OFSRE_TRUSTED_PROXIES):
        # uvicorn must not rewrite the peer address from X-Forwarded-For.
        proxy_headers=False, server_header=False,
        # uvicorn annotates this int but hands it to asyncio.wait_for(timeout=), which takes seconds as a
        # float.
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
        **_protocol_options(service, settings))
    sock = config.bind_socket()
    bound = sock.getsockname()[1]

    def started() -> None:
        _log.info("%s listening on %s:%d", service, host, bound, extra={"port": bound})
        if port_file is not None:
            tmp = port_file.with_suffix(port_file.suffix + ".tmp")
            tmp.write_text(f"{bound}\n")
            tmp.replace(port_file)  # atomic: a reader never sees a half-written file

    shared = _shared_socket()
    _Server(config, started).run(sockets=[sock] if shared is None else [sock, shared])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ofsre.platform.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=(*SERVICES, "migrate"), help="a service to serve, or migrate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once started")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        from ofsre.instrumentation.logs import configure_logging

        configure_logging("migrate")
        asyncio.run(migrate())
        _log.info("schema ready")
        return 0
    serve(args.command, args.host, args.port, port_file=args.port_file, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
