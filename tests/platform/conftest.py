"""Fixtures of the platform's service tests (and the e2e tests below them).

* ``database_url`` — a PostgreSQL database of its own for the test session
  (``ofsre_test_<random>`` on 127.0.0.1:5432, schema created with the real ``migrate`` step,
  dropped at the end; :func:`scratch_database`). Tests isolate from each other by using fresh
  ids, not by cleaning up. The e2e platform gets a database of its own, so its worker never
  takes the messages a unit test waits for.
* ``settings`` — :class:`Settings` on that database, with no settlement latency.
* ``registry`` — a fresh ``CollectorRegistry`` for the apps a test builds (``create_app(settings,
  registry=registry)``), so a test reads its own samples, never another test's in the global one.
* ``serve(app)`` — run an app's lifespan and talk to it with an httpx client over ASGI.
* ``pki`` — a throw-away CA that issues client certificates (``cryptography``).
* ``catalog_file(**changes)`` / ``catalog_writer(dir, **changes)`` — a catalog copy with some limits changed.

Nothing here is autouse: the queue/, runtime/ and deploy/ folders inherit this file untouched.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from ofsre.instrumentation.catalog import DEFAULT_PATH, load_catalog
from ofsre.platform.run import migrate
from ofsre.platform.settings import Settings

PG_SERVER = os.environ.get("OFSRE_TEST_PG", "postgres@127.0.0.1:5432")


@contextmanager
def scratch_database(data_dir: Path) -> Iterator[str]:
    """A new PostgreSQL database with the platform's schema (the real ``migrate``); dropped after."""
    name = f"ofsre_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://{PG_SERVER}/{name}"
    try:
        asyncio.run(migrate(Settings(database_url=url, data_dir=data_dir)))
        yield url
    finally:
        with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    with scratch_database(tmp_path_factory.mktemp("data")) as url:
        yield url


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path, settlement_latency_ms=0, db_pool_size=4,
                    mtls=False, simulation_routes=True)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@asynccontextmanager
async def _serve(app, *, client=("127.0.0.1", 40000), base_url="http://testserver"):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


@pytest.fixture
def serve():
    """``async with serve(app) as http:`` — lifespan started, an httpx client over ASGI."""
    return _serve


# --- PKI ---------------------------------------------------------------------------------------

def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ofsre"),
             x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


@dataclass
class Issued:
    pem: bytes
    key_pem: bytes

    @property
    def header(self) -> str:
        """As nginx forwards it (``$ssl_client_escaped_cert``)."""
        return quote(self.pem.decode(), safe="")


class PKI:
    """A CA issuing client certificates whose subject OU is the organisationId."""

    def __init__(self, cn: str = "ofsre test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.name = _name(cn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def header(self) -> str:
        """The CA certificate itself, forwarded as if it were a client's (a hostile test case)."""
        return quote(self.pem.decode(), safe="")

    def issue(self, org_id: str | None, *, cn: str = "client.example", days_valid: tuple[int, int] = (-1, 30),
              server: bool = False, san: str | None = None, server_auth_only: bool = False) -> Issued:
        """A certificate for ``org_id`` (its subject OU; None: no OU at all). ``server_auth_only``
        gives it an extended key usage that excludes client authentication."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (x509.CertificateBuilder().subject_name(_name(cn, org_id)).issuer_name(self.name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now + timedelta(days=days_valid[0]))
                   .not_valid_after(now + timedelta(days=days_valid[1])))
        if server_auth_only:
            builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                            critical=False)
        if san:
            import ipaddress

            san_ext = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))])
            builder = builder.add_extension(san_ext, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def write(self, directory: Path) -> Path:
        path = directory / "client-ca.pem"
        path.write_bytes(self.pem)
        return path


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="session")
def rogue_pki() -> PKI:
    """Another CA with the same name: its certificates must fail the signature check."""
    return PKI()


# --- catalog overrides -------------------------------------------------------------------------

def write_catalog(directory: Path, *, baixa_tpm: int | None = None,
                  client_timeout_s: float | None = None) -> Path:
    """A copy of the bundled catalog in ``directory`` with some limits changed; checked to have taken."""
    text = DEFAULT_PATH.read_text()
    if baixa_tpm is not None:
        text = text.replace("[tiers.baixa]\np95_ms = 4000\ntpm = 1000",
                            f"[tiers.baixa]\np95_ms = 4000\ntpm = {baixa_tpm}")
    if client_timeout_s is not None:
        text = text.replace("client_timeout_s = 15", f"client_timeout_s = {client_timeout_s}")
    path = directory / f"catalog-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    catalog = load_catalog(path)
    if baixa_tpm is not None:
        listed = catalog.lookup("GET", "/open-banking/accounts/v2/accounts")
        assert listed.tpm == baixa_tpm, "catalog changed shape"
    if client_timeout_s is not None:
        assert catalog.ecosystem["client_timeout_s"] == client_timeout_s, "catalog changed shape"
    return path


@pytest.fixture(scope="session")
def catalog_writer():
    """``catalog_writer(directory, baixa_tpm=3, client_timeout_s=0.5)`` → path of a modified catalog copy."""
    return write_catalog


@pytest.fixture
def catalog_file(tmp_path):
    """``catalog_file(baixa_tpm=3, client_timeout_s=0.5)`` → path of a modified catalog copy in tmp_path."""
    return lambda **changes: write_catalog(tmp_path, **changes)


# --- journeys used by several test modules ---------------------------------------------------------

CPF = "12345678901"
ACCOUNT_PERMISSIONS = ["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ", "ACCOUNTS_TRANSACTIONS_READ",
                       "RESOURCES_READ"]


def consent_request(permissions=None, document: str = CPF) -> dict:
    return {"data": {"loggedUser": {"document": {"identification": document, "rel": "CPF"}},
                     "permissions": permissions or ACCOUNT_PERMISSIONS}}


def payment_consent_request(amount: str = "100.00") -> dict:
    """A payments 4.0.0 consent body (sign it: payments v4 takes JWS, see ``participant.py``)."""
    from .participant import payment_consent_body

    return payment_consent_body(amount, cpf=CPF)


def pix_request(amount: str = "100.00", consent_id: str | None = None) -> dict:
    """A payments 4.0.0 Pix payment body (sign it too)."""
    from .participant import pix_body

    return pix_body(amount, consent_id)


@pytest.fixture
def journeys():
    """Request bodies shared by the tests: ``journeys.consent()``, ``.payment_consent()``, ``.pix()``."""

    class Journeys:
        cpf = CPF
        consent = staticmethod(consent_request)
        payment_consent = staticmethod(payment_consent_request)
        pix = staticmethod(pix_request)

    return Journeys
