"""Configuration of the platform's services, read once at start-up.

Every service takes a :class:`Settings`; ``Settings.from_env()`` reads the ``OFSRE_*``
environment (the table in ``platform/README.md``), and tests build one directly::

    from ofsre.platform.settings import Settings

    settings = Settings.from_env()                                   # a process
    settings = Settings(database_url="postgresql+asyncpg://…/t")     # a test

A malformed value is logged and its default used (a typo must not stop a service), except
where the default would silently weaken security: ``OFSRE_MTLS`` accepts only a clear
``off``/``false``/``0`` to disable the client-certificate check.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "SERVICES", "parse_upstreams"]

_log = logging.getLogger("ofsre.platform.settings")

# The services the runner knows; the gateway routes to the three API modules.
SERVICES = ("gateway", "consents", "accounts", "payments", "worker")
_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"1", "true", "yes", "on"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_upstreams(raw: str | Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """``{"accounts": ["http://…", …], …}`` (JSON text or mapping) → service → base URLs.

    Raises ``ValueError`` on anything else; trailing slashes are dropped.
    """
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, Mapping):
        raise ValueError("upstreams must be a JSON object of service -> list of URLs")
    result: dict[str, tuple[str, ...]] = {}
    for name, urls in data.items():
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) and u.startswith("http") for u in urls):
            raise ValueError(f"upstreams[{name!r}] must be a list of http(s) URLs")
        result[str(name)] = tuple(u.rstrip("/") for u in urls)
    return result


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of the platform's services (environment variable in brackets).

    database_url            [OFSRE_DATABASE_URL] SQLAlchemy async URL
    data_dir                [OFSRE_DATA_DIR] runtime state (the default SQLite file lives here)
    queue_backend           [OFSRE_QUEUE_BACKEND] db | sqs | kafka | pubsub (the queue reads its own OFSRE_QUEUE_*)
    db_pool_size            [OFSRE_DB_POOL_SIZE] connections per process (PostgreSQL)
    upstreams               [OFSRE_UPSTREAMS] gateway: service → base URLs (JSON)
    upstreams_file          [OFSRE_UPSTREAMS_FILE] gateway: file with the same JSON, re-read when it changes
    gateway_tps_limit       [OFSRE_GATEWAY_TPS_LIMIT] gateway: global capacity (None: catalog min_capacity_tps)
    mtls                    [OFSRE_MTLS] gateway: check client certificates (``off`` only for local demos)
    trusted_proxies         [OFSRE_TRUSTED_PROXIES] gateway: CIDRs allowed to forward the client certificate
    client_cert_header      [OFSRE_CLIENT_CERT_HEADER] gateway: header carrying the URL-encoded PEM
    client_ca_file          [OFSRE_CLIENT_CA_FILE] gateway: CA bundle that signs client certificates
    tls_cert_file/key_file  [OFSRE_TLS_CERT_FILE / OFSRE_TLS_KEY_FILE] gateway: own TLS listener (mTLS)
    simulation_routes       [OFSRE_SIMULATION_ROUTES] modules: serve /_sim/… (test authorisation; off by default,
                            never routed by the gateway, and only for the consent's own organisation)
    gateway_secret          [OFSRE_GATEWAY_SECRET] shared by the gateway and the modules: the gateway sends it
                            on every call, a module with it set refuses API calls without it (401)
    max_header_bytes        [OFSRE_MAX_HEADER_BYTES] request line + headers, past it 431
    max_url_bytes           [OFSRE_MAX_URL_BYTES] request target, past it 414
    max_body_bytes          [OFSRE_MAX_BODY_BYTES] request body, past it 413 (gateway and modules)
    header_timeout_s        [OFSRE_HEADER_TIMEOUT_S] seconds to receive the request head, past it 408
    body_timeout_s          [OFSRE_BODY_TIMEOUT_S] seconds to receive the whole body, past it 408
    settlement_latency_ms   [OFSRE_SETTLEMENT_LATENCY_MS] worker: simulated SPI settlement time
    settlement_failure_rate [OFSRE_SETTLEMENT_FAILURE_RATE] worker: fraction of payments rejected (0..1)
    worker_concurrency      [OFSRE_WORKER_CONCURRENCY] worker: messages settled at once
    shutdown_timeout_s      [OFSRE_SHUTDOWN_TIMEOUT_S] seconds to drain in-flight requests on SIGTERM
    """

    database_url: str = ""
    data_dir: Path = Path("var")
    queue_backend: str = "db"
    db_pool_size: int = 10
    upstreams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    upstreams_file: Path | None = None
    gateway_tps_limit: int | None = None
    mtls: bool = True
    trusted_proxies: tuple[IPNetwork, ...] = ()
    client_cert_header: str = "x-ssl-client-cert"
    client_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    simulation_routes: bool = False
    gateway_secret: str | None = field(default=None, repr=False)
    max_header_bytes: int = 16 * 1024
    max_url_bytes: int = 8 * 1024
    max_body_bytes: int = 1 << 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    settlement_latency_ms: int = 100
    settlement_failure_rate: float = 0.0
    worker_concurrency: int = 8
    shutdown_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{self.data_dir}/ofsre.db")
        object.__setattr__(self, "client_cert_header", self.client_cert_header.lower())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        data_dir = Path(env.get("OFSRE_DATA_DIR") or "var")
        return cls(
            database_url=env.get("OFSRE_DATABASE_URL", ""),
            data_dir=data_dir,
            queue_backend=env.get("OFSRE_QUEUE_BACKEND") or "db",
            db_pool_size=reader.number("OFSRE_DB_POOL_SIZE", 10, int, minimum=1),
            upstreams=reader.parsed("OFSRE_UPSTREAMS", {}, parse_upstreams),
            upstreams_file=reader.path("OFSRE_UPSTREAMS_FILE"),
            gateway_tps_limit=reader.number("OFSRE_GATEWAY_TPS_LIMIT", None, int, minimum=1),
            mtls=env.get("OFSRE_MTLS", "on").strip().lower() not in _FALSE,
            trusted_proxies=reader.parsed("OFSRE_TRUSTED_PROXIES", (), _networks),
            client_cert_header=env.get("OFSRE_CLIENT_CERT_HEADER") or "x-ssl-client-cert",
            client_ca_file=reader.path("OFSRE_CLIENT_CA_FILE"),
            tls_cert_file=reader.path("OFSRE_TLS_CERT_FILE"),
            tls_key_file=reader.path("OFSRE_TLS_KEY_FILE"),
            simulation_routes=reader.flag("OFSRE_SIMULATION_ROUTES", False),
            gateway_secret=env.get("OFSRE_GATEWAY_SECRET", "").strip() or None,
            max_header_bytes=reader.number("OFSRE_MAX_HEADER_BYTES", 16 * 1024, int, minimum=1024),
            max_url_bytes=reader.number("OFSRE_MAX_URL_BYTES", 8 * 1024, int, minimum=256),
            max_body_bytes=reader.number("OFSRE_MAX_BODY_BYTES", 1 << 20, int, minimum=1024),
            header_timeout_s=reader.number("OFSRE_HEADER_TIMEOUT_S", 10.0, float, minimum=0.1),
            body_timeout_s=reader.number("OFSRE_BODY_TIMEOUT_S", 10.0, float, minimum=0.1),
            settlement_latency_ms=reader.number("OFSRE_SETTLEMENT_LATENCY_MS", 100, int, minimum=0),
            settlement_failure_rate=reader.number("OFSRE_SETTLEMENT_FAILURE_RATE", 0.0, float, 0, 1),
            worker_concurrency=reader.number("OFSRE_WORKER_CONCURRENCY", 8, int, minimum=1),
            shutdown_timeout_s=reader.number("OFSRE_SHUTDOWN_TIMEOUT_S", 20.0, float, minimum=0),
        )


class _Reader:
    """Typed reads of the environment; a bad value is logged and replaced by the default."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _bad(self, name: str, value: str, default: object, why: object) -> None:
        _log.warning("%s=%r is invalid (%s); using %r", name, value, why, default)

    def number(self, name, default, kind, minimum=None, maximum=None):
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
            if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
                raise ValueError(f"outside [{minimum}, {maximum}]")
        except ValueError as exc:
            self._bad(name, raw, default, exc)
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in _TRUE or raw in _FALSE:
            return raw in _TRUE
        self._bad(name, raw, default, "expected on/off")
        return default

    def path(self, name: str) -> Path | None:
        raw = self.env.get(name, "").strip()
        return Path(raw) if raw else None

    def parsed(self, name, default, parse):
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError as exc:  # json.JSONDecodeError and ipaddress errors are ValueErrors
            self._bad(name, raw, default, exc)
            return default
