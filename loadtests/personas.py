"""Personas of the ecosystem: receiving institutions, their certificates, and the traffic mix.

Nothing here imports locust. A receiving institution (a "receptora") calls the platform with
its own organisation id, its own client certificate and, once a customer authorised a consent,
a token scoped to that consent (``Bearer consent:<id>``, the platform's stand-in for an access
token whose scope is ``consent:<id>``)::

    from ofsre.loadtests.personas import write_pki, load_institutions

    write_pki("var/pki", institutions=20)       # ca.pem + one certificate per institution
    insts = load_institutions("var/pki")        # [Institution(org_id=..., cert_header=...), ...]

The gateway sits behind a WAF that terminates mTLS and forwards the client certificate in a
header (URL-encoded PEM, nginx's ``$ssl_client_escaped_cert``); the load generator plays that
WAF, so the gateway must list 127.0.0.1 in ``OFSRE_TRUSTED_PROXIES`` and the PKI's ``ca.pem``
in ``OFSRE_CLIENT_CA_FILE``. Without a PKI directory the personas send no certificate (a
platform with ``OFSRE_MTLS=off``), and every institution shares the client IP as TPM origin.

Defaults, from openfinance.md §7 (ecosystem size) — **assumptions**, each a parameter:

* ``institutions = 20``: the ecosystem has > 800; 20 keep a local run's per-origin counts
  realistic while staying small.
* The mix (weights of journeys started by a persona): account reads on an existing consent
  dominate, as in the ecosystem (≈ 4 B calls a week against ≈ 1 M payments a week, 4.5 M in
  July 2025); payments and new consents are over-weighted (≈ 1 in 10 instead of ≈ 1 in
  1,000) so every service of the platform sees load and scales in a short run.
* Think time 0.5–1.5 s between journeys: receivers are machines reading in batches.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["Institution", "Mix", "DEFAULT_MIX", "DEFAULT_INSTITUTIONS", "DEFAULT_THINK_TIME", "write_pki",
           "load_institutions", "anonymous_institutions", "new_interaction_id", "CPFS"]

DEFAULT_INSTITUTIONS = 20
DEFAULT_THINK_TIME = (0.5, 1.5)
# Customers whose accounts the platform seeds (any 11 digits work; a few keep data reused).
CPFS = ("76109277673", "52998224725", "11144477735", "39053344705", "86288366757")


def new_interaction_id() -> str:
    """A fresh RFC 4122 id: one per request/response pair, never per journey (openfinance.md §4)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Mix:
    """Relative weights of the journeys a persona starts (see the module docstring)."""

    account_reads: int = 70      # accounts list → balances → paginated transactions, existing consent
    new_consent: int = 12        # consent creation → authorisation → first reads (→ occasional revocation)
    payment: int = 10            # payment consent → authorisation → Pix payment → status polling
    open_data: int = 8           # unauthenticated open-data reads
    revoke_probability: float = 0.1  # after a new-consent journey, the customer revokes it

    @classmethod
    def parse(cls, text: str) -> Mix:
        """``"account_reads=70,payment=20"``: the named weights changed, the others kept."""
        if not text:
            return cls()
        values: dict[str, Any] = {}   # int weights, a float probability
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if name not in cls.__dataclass_fields__:
                raise ValueError(f"unknown mix entry {name!r} (known: {', '.join(cls.__dataclass_fields__)})")
            values[name] = float(value) if name == "revoke_probability" else int(value)
        mix = cls(**values)
        if mix.account_reads + mix.new_consent + mix.payment + mix.open_data <= 0:
            raise ValueError("the mix needs a positive weight")
        return mix

    def weights(self) -> dict[str, int]:
        return {"account_reads": self.account_reads, "new_consent": self.new_consent,
                "payment": self.payment, "open_data": self.open_data}


DEFAULT_MIX = Mix()


@dataclass(frozen=True)
class Institution:
    """A receiving institution: its organisation id and, with mTLS, its certificate header value."""

    org_id: str
    name: str
    cert_header: str | None = None   # URL-encoded PEM, as a WAF forwards it

    @property
    def origin(self) -> str:
        """What the gateway counts TPM by: the organisation, or the client IP without a certificate."""
        return self.org_id if self.cert_header else "client-ip"


def anonymous_institutions(n: int = DEFAULT_INSTITUTIONS) -> list[Institution]:
    """``n`` institutions without certificates (a platform with mTLS off)."""
    return [Institution(str(uuid.UUID(int=i + 1)), f"receptora-{i + 1:03d}") for i in range(n)]


def write_pki(directory: str | os.PathLike[str], institutions: int = DEFAULT_INSTITUTIONS,
              *, days: int = 30) -> Path:
    """A CA (``ca.pem``) and ``institutions`` client certificates whose subject OU is the
    organisation id, in ``directory``; ``institutions.json`` lists them. Returns the CA path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)

    def name(cn: str, ou: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ofsre load test"),
                 x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if ou:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("ofsre load-test CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
          .not_valid_after(now + _dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path = out / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    listed = []
    for i in range(institutions):
        org_id = str(uuid.uuid4())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"receptora-{i + 1:03d}",
                                                            org_id)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5))
                .not_valid_after(now + _dt.timedelta(days=days))
                .sign(ca_key, hashes.SHA256()))
        cert_file = out / f"receptora-{i + 1:03d}.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"receptora-{i + 1:03d}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        listed.append({"org_id": org_id, "name": f"receptora-{i + 1:03d}", "cert": cert_file.name})
    (out / "institutions.json").write_text(json.dumps(listed, indent=2) + "\n")
    return ca_path


def load_institutions(directory: str | os.PathLike[str]) -> list[Institution]:
    """The institutions :func:`write_pki` wrote (a clear error when the directory is not one)."""
    root = Path(directory)
    index = root / "institutions.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: create the personas' PKI with "
                                f"`ofsre loadtest pki {root}`")
    found = []
    for row in json.loads(index.read_text()):
        pem = (root / row["cert"]).read_text()
        found.append(Institution(row["org_id"], row["name"], quote(pem, safe="")))
    if not found:
        raise ValueError(f"{index} lists no institution")
    return found


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    """One journey name drawn by weight."""
    names = [n for n, w in weights.items() if w > 0]
    return rng.choices(names, [weights[n] for n in names])[0]
