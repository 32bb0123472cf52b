"""The customer's simulated decision at the bank, as the local runtime's tools make it.

In Open Finance the customer authorises a consent in a browser journey at the data holder,
which the platform does not model. The modules stand in for it with ``/_sim/…`` routes, which
are served only with ``OFSRE_SIMULATION_ROUTES=on``, are **never routed by the gateway**, and
act only for the consent's own organisation. A tool (the demo, a test, a load-test persona)
therefore calls the module directly, as the gateway would: with the platform's gateway secret
and the organisation the consent was created by::

    from ofsre.platform.runtime.simulation import SimulatedBank

    bank = SimulatedBank.from_data_dir(Path("var"))      # upstreams.json + gateway.secret
    bank.decide("consents", consent_id, org_id="org-a")  # → the consent, now AUTHORISED

The local runtime writes ``gateway.secret`` (mode 0600) into its data directory at every
start: it is the local stand-in for the Kubernetes Secret the Helm chart mounts.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from ..guard import GATEWAY_SECRET_HEADER

__all__ = ["SimulatedBank", "SECRET_FILE", "new_secret"]

SECRET_FILE = "gateway.secret"
_PATHS = {"consents": "/_sim/consents/{id}/{decision}", "payments": "/_sim/payments/consents/{id}/{decision}"}


def new_secret(data_dir: Path) -> str:
    """A fresh gateway secret, written to ``data_dir/gateway.secret`` readable by this user only."""
    secret = secrets.token_urlsafe(32)
    path = Path(data_dir) / SECRET_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


@dataclass
class SimulatedBank:
    """Calls the modules' simulation routes directly (see the module docstring)."""

    upstreams: dict[str, list[str]]
    secret: str | None

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SimulatedBank:
        data_dir = Path(data_dir)
        upstreams = json.loads((data_dir / "upstreams.json").read_text())
        secret_file = data_dir / SECRET_FILE
        return cls(upstreams, secret_file.read_text().strip() if secret_file.exists() else None)

    def decide(self, service: Literal["consents", "payments"], consent_id: str, *, org_id: str | None = None,
               decision: Literal["authorise", "reject"] = "authorise", client: httpx.Client | None = None,
               ) -> httpx.Response:
        """POST the decision to the first replica of ``service``; the module's answer."""
        replicas = self.upstreams.get(service) or []
        if not replicas:
            raise LookupError(f"no {service} replica in the upstreams table")
        headers = {"x-fapi-interaction-id": str(uuid.uuid4())}
        if self.secret:
            headers[GATEWAY_SECRET_HEADER] = self.secret
        if org_id:
            headers["x-ofsre-client-org-id"] = org_id
        url = replicas[0] + _PATHS[service].format(id=consent_id, decision=decision)
        if client is not None:
            return client.post(url, headers=headers)
        return httpx.post(url, headers=headers, timeout=15.0)
