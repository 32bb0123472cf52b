"""Configuration of the platform's services, read once at start-up.

Every service takes a :class:`Settings`; ``Settings.from_env()`` reads the ``OFSRE_*``
environment (each variable is a :class:`ofsre.instrumentation.config.Var` below; the table in the
top-level README is generated from them), and tests build one directly::

    from ofsre.platform.settings import Settings

    settings = Settings.from_env()                                   # a process
    settings = Settings(database_url="postgresql+asyncpg://…/t")     # a test

A malformed value is logged once and its default used (a typo must not stop a service). The
default of ``OFSRE_MTLS`` is on, so only a clear ``off``/``no``/``false``/``0`` disables the
client-certificate check: a malformed value keeps it on.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ofsre.instrumentation._config import GATEWAY_SECRET, ORG_ID
from ofsre.instrumentation.config import (
    BOOLEAN,
    PATH,
    TEXT,
    Var,
    duration,
    integer,
    items,
    number,
    parsed,
    size,
)
from ofsre.platform.queue._config import DATA_DIR, DATABASE_URL, QUEUE_BACKEND

__all__ = ["Settings", "SERVICES", "parse_upstreams", "parse_webhooks", "MTLS", "SIMULATION_ROUTES",
           "REDIS_URL", "REDIS_TIMEOUT_MS", "REDIS_KEY_PREFIX", "GATEWAY_REPLICAS", "SHARED_FD",
           "PAYMENT_WEBHOOKS", "ORG_ID", "JWKS_DIR", "JWS_KEY_FILE", "PUBLIC_URL"]

_LOGGER = "ofsre.platform.settings"

# The services the runner knows; the gateway routes to the three API modules.
SERVICES = ("gateway", "consents", "accounts", "payments", "worker")

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


def parse_webhooks(raw: str | Mapping[str, object]) -> dict[str, str]:
    """``{"<organisationId>": "https://…", …}`` (JSON text or mapping) → organisationId → URL.

    Raises ``ValueError`` on anything else; trailing slashes are dropped.
    """
    table = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(table, Mapping) or not all(isinstance(v, str) and v.startswith("http")
                                                 for v in table.values()):
        raise ValueError("expected a JSON object of organisationId -> http(s) URL")
    return {str(k): str(v).rstrip("/") for k, v in table.items()}


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=False)


def _var(name: str, kind: Any, default: Any, reader: str, doc: str, **more: Any) -> Var[Any]:
    return Var(name, kind, default, reader=reader, doc=doc, logger=_LOGGER, **more)


_ALL = "all services"
DB_POOL_SIZE = _var("OFSRE_DB_POOL_SIZE", integer(1), 10, "all services but the gateway",
                    "connections per process (plus as many overflow)")
UPSTREAMS = _var("OFSRE_UPSTREAMS", parsed(parse_upstreams, "JSON"), {}, "gateway",
                 'service → base URLs: `{"consents": ["http://…"], "accounts": […], "payments": […]}`')
UPSTREAMS_FILE = _var("OFSRE_UPSTREAMS_FILE", PATH, None, "gateway",
                      "a file with the same JSON, re-read every second when it changes (its services win)")
GATEWAY_TPS_LIMIT = _var("OFSRE_GATEWAY_TPS_LIMIT", integer(1), None, "gateway",
                         "global capacity; 529 past it", shown="catalog `ecosystem.min_capacity_tps` (300)")
MTLS = _var("OFSRE_MTLS", BOOLEAN, True, "gateway, runtime",
            "`off`: no client-certificate check (local demos only; a malformed value keeps it on)")
TRUSTED_PROXIES = _var("OFSRE_TRUSTED_PROXIES", items(_network, label="CIDRs"), (), "gateway",
                       "comma-separated CIDRs allowed to forward a client certificate")
CLIENT_CERT_HEADER = _var("OFSRE_CLIENT_CERT_HEADER", TEXT, "x-ssl-client-cert", "gateway",
                          "header with the URL-encoded PEM (nginx `$ssl_client_escaped_cert`)")
CLIENT_CA_FILE = _var("OFSRE_CLIENT_CA_FILE", PATH, None, "gateway",
                      "PEM bundle of the CAs that sign client certificates (required with mTLS on)")
TLS_CERT_FILE = _var("OFSRE_TLS_CERT_FILE", PATH, None, "gateway",
                     "serve TLS itself and require a client certificate in the handshake (with "
                     "`OFSRE_TLS_KEY_FILE`)")
TLS_KEY_FILE = _var("OFSRE_TLS_KEY_FILE", PATH, None, "gateway", "the private key of `OFSRE_TLS_CERT_FILE`")
SIMULATION_ROUTES = _var("OFSRE_SIMULATION_ROUTES", BOOLEAN, False, "consents, payments",
                         "serve `/_sim/**` (the simulated authorisation, only for the consent's own "
                         "organisation; the gateway never routes it)")
MAX_HEADER_BYTES = _var("OFSRE_MAX_HEADER_BYTES", size(1024), 16 * 1024, _ALL,
                        "request line + headers; past it 431")
MAX_URL_BYTES = _var("OFSRE_MAX_URL_BYTES", size(256), 8 * 1024, _ALL, "request target; past it 414")
MAX_BODY_BYTES = _var("OFSRE_MAX_BODY_BYTES", size(1024), 1 << 20, _ALL, "request body; past it 413")
HEADER_TIMEOUT_S = _var("OFSRE_HEADER_TIMEOUT_S", duration(0.1), 10.0, _ALL,
                        "seconds to receive the request line and headers; past it 408")
BODY_TIMEOUT_S = _var("OFSRE_BODY_TIMEOUT_S", duration(0.1), 10.0, _ALL,
                      "seconds to receive the whole body; past it 408")
SETTLEMENT_LATENCY_MS = _var("OFSRE_SETTLEMENT_LATENCY_MS", integer(0, label="milliseconds"), 100, "worker",
                             "simulated SPI time (ms) between ACCP and the outcome")
SETTLEMENT_FAILURE_RATE = _var("OFSRE_SETTLEMENT_FAILURE_RATE", number(0, 1), 0.0, "worker",
                               "fraction of payments rejected (RJCT `PAGAMENTO_RECUSADO_SPI`), 0..1")
WORKER_CONCURRENCY = _var("OFSRE_WORKER_CONCURRENCY", integer(1), 8, "worker",
                          "consumer loops settling side by side")
SHUTDOWN_TIMEOUT_S = _var("OFSRE_SHUTDOWN_TIMEOUT_S", duration(), 20.0, _ALL,
                          "seconds to drain in-flight requests on SIGTERM")

# Field of Settings -> its variable (Settings.from_env reads each).
_VARS: dict[str, Var[Any]] = {
    "database_url": DATABASE_URL, "data_dir": DATA_DIR, "queue_backend": QUEUE_BACKEND,
    "db_pool_size": DB_POOL_SIZE, "upstreams": UPSTREAMS, "upstreams_file": UPSTREAMS_FILE,
    "gateway_tps_limit": GATEWAY_TPS_LIMIT, "mtls": MTLS, "trusted_proxies": TRUSTED_PROXIES,
    "client_cert_header": CLIENT_CERT_HEADER, "client_ca_file": CLIENT_CA_FILE,
    "tls_cert_file": TLS_CERT_FILE, "tls_key_file": TLS_KEY_FILE, "simulation_routes": SIMULATION_ROUTES,
    "gateway_secret": GATEWAY_SECRET, "max_header_bytes": MAX_HEADER_BYTES, "max_url_bytes": MAX_URL_BYTES,
    "max_body_bytes": MAX_BODY_BYTES, "header_timeout_s": HEADER_TIMEOUT_S,
    "body_timeout_s": BODY_TIMEOUT_S, "settlement_latency_ms": SETTLEMENT_LATENCY_MS,
    "settlement_failure_rate": SETTLEMENT_FAILURE_RATE, "worker_concurrency": WORKER_CONCURRENCY,
    "shutdown_timeout_s": SHUTDOWN_TIMEOUT_S,
}

# Read by one service's own module through these declarations, not by Settings: gateway/limits.py (REDIS_*,
# GATEWAY_REPLICAS), run.py (SHARED_FD), worker/app.py (PAYMENT_WEBHOOKS), jws.py (ORG_ID, declared with
# GATEWAY_SECRET in ofsre.instrumentation._config since the load tests read both; JWKS_DIR, JWS_KEY_FILE),
# payments/app.py (PUBLIC_URL).
REDIS_URL = _var("OFSRE_REDIS_URL", TEXT, None, "gateway",
                 "count TPM limits in this Redis, shared by every gateway replica (`redis://host:6379/0`)")
REDIS_TIMEOUT_MS = _var("OFSRE_REDIS_TIMEOUT_MS", number(0, label="milliseconds"), 250.0, "gateway",
                        "past the timeout a call is counted in the process")
REDIS_KEY_PREFIX = _var("OFSRE_REDIS_KEY_PREFIX", TEXT, "ofsre:gateway:tpm", "gateway",
                        "the prefix keeps platforms sharing a Redis apart")
GATEWAY_REPLICAS = _var("OFSRE_GATEWAY_REPLICAS", integer(1), 1, "gateway",
                        "the most gateway replicas that may run (the runtime sets it): > 1 without Redis "
                        "logs a warning")
# Text: run.py checks it is an inherited listening socket, and anything else stops the start.
SHARED_FD = _var("OFSRE_SHARED_FD", TEXT, None, "gateway",
                 "a listening socket inherited as this file descriptor: the local runtime opens the gateway "
                 "port once and every gateway replica accepts from it (one accept queue); another value "
                 "stops the start")
PAYMENT_WEBHOOKS = _var("OFSRE_PAYMENT_WEBHOOKS", parsed(parse_webhooks, "JSON"), {}, "worker",
                        'JSON `{"<organisationId>": "https://…"}`: the initiators\' webhook URIs; each '
                        "settled or rejected payment is notified there (the platform's call *as a client*, "
                        "reported to the PCM as CLIENT)")
JWKS_DIR = _var("OFSRE_JWKS_DIR", PATH, None, "payments", shown="`$OFSRE_DATA_DIR/jwks`",
                doc="the Directory's stand-in: one JWKS (public keys) per organisation, "
                    "`<organisationId>.json`; an initiator's requests verify only against its own file "
                    "(re-read when it changes)")
JWS_KEY_FILE = _var("OFSRE_JWS_KEY_FILE", PATH, None, "payments",
                    shown="`$OFSRE_DATA_DIR/jws/platform-key.json`",
                    doc="the platform's private signing JWK (RSA 2048); generated on first start if absent "
                        "(replicas agree on one), its public half published as "
                        "`$OFSRE_JWKS_DIR/$OFSRE_ORG_ID.json`")
PUBLIC_URL = _var("OFSRE_PUBLIC_URL", TEXT, None, "payments", shown="— (the URL called)",
                  doc="the API's public base URL (as in the Directory, e.g. `https://api.bank.example`): "
                      "payments' `links.self` must be an https host name (payments 4.0.0's pattern), and a "
                      "request's `aud` may name it")


@dataclass(frozen=True)
class Settings:
    """Every knob of the platform's services; the variable of each field is in ``_VARS`` (and the table)."""

    database_url: str = DATABASE_URL.default
    data_dir: Path = DATA_DIR.default
    queue_backend: str = QUEUE_BACKEND.default
    db_pool_size: int = DB_POOL_SIZE.default
    upstreams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    upstreams_file: Path | None = UPSTREAMS_FILE.default
    gateway_tps_limit: int | None = GATEWAY_TPS_LIMIT.default
    mtls: bool = MTLS.default
    trusted_proxies: tuple[IPNetwork, ...] = TRUSTED_PROXIES.default
    client_cert_header: str = CLIENT_CERT_HEADER.default
    client_ca_file: Path | None = CLIENT_CA_FILE.default
    tls_cert_file: Path | None = TLS_CERT_FILE.default
    tls_key_file: Path | None = TLS_KEY_FILE.default
    simulation_routes: bool = SIMULATION_ROUTES.default
    gateway_secret: str | None = field(default=GATEWAY_SECRET.default, repr=False)
    max_header_bytes: int = MAX_HEADER_BYTES.default
    max_url_bytes: int = MAX_URL_BYTES.default
    max_body_bytes: int = MAX_BODY_BYTES.default
    header_timeout_s: float = HEADER_TIMEOUT_S.default
    body_timeout_s: float = BODY_TIMEOUT_S.default
    settlement_latency_ms: int = SETTLEMENT_LATENCY_MS.default
    settlement_failure_rate: float = SETTLEMENT_FAILURE_RATE.default
    worker_concurrency: int = WORKER_CONCURRENCY.default
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S.default

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{self.data_dir}/ofsre.db")
        object.__setattr__(self, "client_cert_header", self.client_cert_header.lower())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        values = {name: var.from_env(environ) for name, var in _VARS.items()}
        values["upstreams"] = dict(values["upstreams"])  # never the declaration's own default object
        return cls(**values)
