"""What payments v4's JWS costs: signing and verifying PS256 messages, against plain JSON.

Payments v4 signs every request (the participant: a load-test persona) and every response
(the platform: a payments replica), and each side verifies what it receives. This measures,
on one core, with the platform's own code (``ofsre.platform.jws``: PyJWT over ``cryptography``,
RSA 2048 as ICP-Brasil signing certificates):

* participant ``sign`` of a Pix payment request, and ``verify`` of the signed answer;
* platform ``verify`` of the request (JWKS lookup, signature, iat/aud/iss/jti) and ``sign`` of the answer;
* the named peer: ``json.dumps`` + ``json.loads`` of the same body, what the platform did before.

The table prints microseconds per operation, operations per second per core, the ratio to the
JSON peer, and a payment call's JWS work as a share of the alta tier's p95 limit (catalog).
``BENCH_DURATION`` (seconds per row, default 1.5) bounds the run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ofsre.instrumentation.catalog import load_catalog
from ofsre.platform.jws import KeyDirectory, SigningKey, Verifier

DURATION_S = float(os.environ.get("BENCH_DURATION", "1.5"))
AUD = "https://bank.example/open-banking/payments/v4/pix/payments"
BODY = {"data": [{
    "endToEndId": "E9999999920261201123012345678901", "localInstrument": "MANU",
    "payment": {"amount": "100.00", "currency": "BRL"},
    "creditorAccount": {"ispb": "12345678", "issuer": "0001", "number": "1234567890", "accountType": "CACC"},
    "cnpjInitiator": "12345678000195", "remittanceInformation": "ofsre bench",
    "consentId": "urn:ofsrepay:3f2c8a9e-5b7d-4c1e-9a6f-2d8b7e4c1a30"}]}


def _rate(fn) -> float:
    """Seconds per call of ``fn``, measured for DURATION_S after a short warm-up."""
    for _ in range(20):
        fn()
    n, started = 0, time.perf_counter()
    deadline = started + DURATION_S
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return (now - started) / n


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        directory = KeyDirectory(Path(tmp))
        participant, platform = SigningKey.generate(kid="org-bench-1"), SigningKey.generate(kid="bank-1")
        directory.publish("org-bench", participant)
        directory.publish("ofsre-bank", platform)
        verifier = Verifier(directory)  # replay is checked in the database by the platform, not here
        request = participant.sign(BODY, iss="org-bench", aud=AUD)
        answer = platform.sign(BODY, iss="ofsre-bank", aud="org-bench")
        print("bench_jws: measuring sign/verify …", file=sys.stderr, flush=True)
        rows = {
            "json dumps+loads (peer)": _rate(lambda: json.loads(json.dumps(BODY))),
            "participant: sign request": _rate(lambda: participant.sign(BODY, iss="org-bench", aud=AUD)),
            "platform: verify request": _rate(lambda: verifier.verify(request, audience=AUD,
                                                                      issuer="org-bench")),
            "platform: sign response": _rate(lambda: platform.sign(BODY, iss="ofsre-bank", aud="org-bench")),
            "participant: verify response": _rate(lambda: verifier.verify(answer, audience="org-bench",
                                                                          issuer="ofsre-bank")),
        }
    peer = rows["json dumps+loads (peer)"]
    limit_ms = load_catalog().lookup("POST", "/open-banking/payments/v4/pix/payments").p95_ms
    lines = [f"{'operation':<30} {'µs/op':>9} {'ops/s/core':>11} {'× json':>8}"]
    for name, seconds in rows.items():
        lines.append(f"{name:<30} {seconds * 1e6:>9.1f} {1 / seconds:>11.0f} {seconds / peer:>8.0f}")
    replica = rows["platform: verify request"] + rows["platform: sign response"]
    user = rows["participant: sign request"] + rows["participant: verify response"]
    lines.append("")
    lines.append(f"per payment call: payments replica {replica * 1e3:.2f} ms of CPU "
                 f"({1 / replica:.0f} signed calls/s/core at most; {replica * 1e3 / limit_ms:.2%} of the "
                 f"{limit_ms} ms p95 limit); load-test user {user * 1e3:.2f} ms "
                 f"({1 / user:.0f} calls/s/core)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
