"""The regulator's contract as a test oracle: every request and response checked with openapi-core.

The official Open Finance Brasil OpenAPI documents live in ``../shared/schemas/openfinance/``
(consents 3.3.1, accounts 2.4.2, payments 4.0.0, resources 3.1.0; byte-for-byte copies). A
:class:`ContractRecorder` takes httpx request/response pairs (an httpx event hook or explicit
calls), picks the document by the path's family prefix, and validates both directions::

    recorder = ContractRecorder(directory)            # the KeyDirectory that verifies JWS bodies
    client = httpx.Client(event_hooks={"response": [recorder.hook]})
    ... run the journey ...
    assert recorder.deviations == [], recorder.report()

The documents declare ``https://api.banco.com.br/open-banking/<family>/v<major>`` as their
server, so each URL is re-based on that host before matching (the path is kept). Bodies of
``application/jwt`` (payments v4) are JWS: the deserializer verifies the signature against the
sender's registered keys (a bad or unsigned body is a deviation) and hands openapi-core the
claims, which the document's schema then validates. A path that matches no document is a
deviation too: nothing is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from ofsre.platform.jws import MEDIA_TYPE, JwsError, KeyDirectory, Verifier

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = REPO.parent / "shared" / "schemas" / "openfinance"
SERVER = "https://api.banco.com.br"
FAMILIES = {  # path prefix → document
    "/open-banking/consents/v3/": "consents-3.3.1.yml",
    "/open-banking/accounts/v2/": "accounts-2.4.2.yml",
    "/open-banking/payments/v4/": "payments-4.0.0.yml",
    "/open-banking/resources/v3/": "resources-3.1.0.yml",
}


class _Request:
    def __init__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        self.host_url = SERVER
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "").lower()
        query = ImmutableMultiDict(parse_qsl(url.query, keep_blank_values=True))
        self.parameters = RequestParameters(query=query, header=Headers(list(request.headers.items())),
                                            cookie=ImmutableMultiDict())

    @property
    def full_url_pattern(self) -> str:
        return self.host_url + self.path


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.headers = Headers(list(response.headers.items()))
        self.content_type = response.headers.get("content-type", "").lower()
        self.data = response.content or None


@dataclass
class Checked:
    """One exchange. ``request_valid`` is what the test meant to send: a hostile request is
    expected to break the document (the check then is that the answer still conforms)."""

    method: str
    path: str
    status: int
    request_errors: list[str]
    response_errors: list[str]
    request_valid: bool = True

    @property
    def ok(self) -> bool:
        return (not self.request_errors) == self.request_valid and not self.response_errors


def _describe(error: Exception) -> str:
    parts = [f"{type(error).__name__}: {str(error)[:300]}"]
    for inner in getattr(error, "schema_errors", None) or []:
        parts.append(f"  - {'/'.join(map(str, inner.absolute_path))}: {inner.message[:300]}")
    cause = error.__cause__
    if cause is not None:
        parts.append(f"  caused by {type(cause).__name__}: {str(cause)[:400]}")
        for inner in getattr(cause, "schema_errors", None) or []:
            parts.append(f"    - {'/'.join(map(str, inner.absolute_path))}: {inner.message[:300]}")
    return "\n".join(parts)


@dataclass
class ContractRecorder:
    """Validates every exchange it is given; ``checked`` keeps them all, ``deviations`` the bad ones."""

    directory: KeyDirectory
    checked: list[Checked] = field(default_factory=list)

    def __post_init__(self) -> None:
        verifier = Verifier(self.directory)

        def jwt_body(raw: bytes) -> object:
            try:
                claims = verifier.verify(raw, audience=None)
            except JwsError as exc:
                raise ValueError(f"application/jwt body is not a valid JWS: {exc.detail}") from None
            return claims

        config = Config(extra_media_type_deserializers={MEDIA_TYPE: jwt_body})
        self.apis = {prefix: OpenAPI.from_file_path(str(DOCUMENTS / name), config=config)
                     for prefix, name in FAMILIES.items()}

    def _api(self, path: str) -> OpenAPI | None:
        return next((api for prefix, api in self.apis.items() if path.startswith(prefix)), None)

    def check(self, response: httpx.Response, *, request_valid: bool = True) -> Checked:
        """Validate ``response`` and the request that produced it; ``request_valid=False`` for a
        request built to break the document."""
        request = response.request
        path = urlsplit(str(request.url)).path
        api = self._api(path)
        if api is None:
            result = Checked(request.method, path, response.status_code, [f"no document for {path}"],
                             ["no document"], request_valid)
        else:
            req, resp = _Request(request), _Response(response)
            result = Checked(request.method, path, response.status_code,
                             [_describe(e) for e in api.iter_request_errors(req)],
                             [_describe(e) for e in api.iter_response_errors(req, resp)], request_valid)
        self.checked.append(result)
        return result

    def hook(self, response: httpx.Response) -> None:
        """An httpx ``response`` event hook (sync clients): reads the body, then checks."""
        response.read()
        self.check(response)

    @property
    def deviations(self) -> list[Checked]:
        return [c for c in self.checked if not c.ok]

    def report(self) -> str:
        lines = [f"{len(self.checked) - len(self.deviations)} of {len(self.checked)} exchanges conform"]
        for c in self.deviations:
            lines.append(f"{c.method} {c.path} -> {c.status}")
            if not c.request_valid and not c.request_errors:
                lines.append("  request: meant to break the document, but it conforms")
            lines += [f"  request: {e}" for e in c.request_errors]
            lines += [f"  response: {e}" for e in c.response_errors]
        return "\n".join(lines)


def jwt_claims(response: httpx.Response) -> dict:
    """The unverified claims of a JWS body (for assertions after the recorder verified it)."""
    import jwt

    return jwt.decode(response.text, options={"verify_signature": False})


__all__ = ["ContractRecorder", "Checked", "DOCUMENTS", "jwt_claims", "json"]
