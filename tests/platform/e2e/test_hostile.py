"""A hostile participant against the real gateway and modules (issue #7: every hole, its request).

Each test sends the request that once got through, over a raw socket where an HTTP client would
have tidied it up (httpx removes dot segments, refuses bad header values), to the real processes
of the ``platform`` fixture, and checks the answer: a 4xx with the Open Finance error body and an
``x-fapi-interaction-id``, never a 5xx, never another institution's data.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.context import is_valid_interaction_id
from ofsre.platform.gateway.app import SERVICE_OF_API, canonical_path
from ofsre.platform.jws import Participant
from ofsre.platform.runtime.config import RuntimeConfig

from ..conftest import consent_request, payment_consent_request, pix_request
from ..participant import signed

CONSENTS = "/open-banking/consents/v3/consents"
ACCOUNTS = "/open-banking/accounts/v2/accounts"
PAYMENTS = "/open-banking/payments/v4"


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def of_error(self, status: int) -> dict:
        """Assert the Open Finance error body and a valid interaction id; the first error."""
        assert self.status == status, (self.status, self.body[:300])
        assert is_valid_interaction_id(self.headers.get("x-fapi-interaction-id", "").encode()), self.headers
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        body = json.loads(self.body)
        assert set(body) == {"errors", "meta"} and set(body["errors"][0]) == {"code", "title", "detail"}, body
        return body["errors"][0]


def raw(port: int, head: bytes, body: bytes = b"", *, timeout: float = 20.0) -> Answer:
    """Send ``head`` (request line and headers, no final blank line) and ``body`` as they are."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head + b"\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: read its answer
        response = http.client.HTTPResponse(sock, method=head.split(b" ", 1)[0].decode("latin-1"))
        response.begin()
        return Answer(response.status, response.headers, response.read())


def request_head(method: str, target: bytes | str, headers: dict[str, str] | None = None,
                 *, host: bytes = b"127.0.0.1") -> bytes:
    target = target if isinstance(target, bytes) else target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"host: " + host, b"connection: close"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    return b"\r\n".join(lines)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def org_a(pki):
    return {"x-ssl-client-cert": pki.issue(f"org-a-{secrets.token_hex(3)}").header}


@pytest.fixture(scope="module")
def victim(platform, pki):
    """Organisation B's data: an authorised data consent and an authorised payment consent."""
    org = f"org-b-{secrets.token_hex(3)}"
    cert = {"x-ssl-client-cert": pki.issue(org).header}
    with httpx.Client(base_url=platform.gateway.url, headers=cert, timeout=20) as http:
        cid = http.post(CONSENTS, json=consent_request()).json()["data"]["consentId"]
        assert platform.bank.decide("consents", cid, org_id=org).status_code == 200
        me = Participant.register(org, platform.workdir / "jwks")  # payments v4 takes signed JWS
        url = platform.gateway.url + f"{PAYMENTS}/consents"
        pay = me.read(http.post(f"{PAYMENTS}/consents", **signed(me, url, payment_consent_request())).text)
        pay = pay["data"]["consentId"]
        assert platform.bank.decide("payments", pay, org_id=org).status_code == 200
    return {"org": org, "cert": cert, "consent": cid, "payment_consent": pay, "initiator": me}


def consent_status(platform, victim) -> str:
    with httpx.Client(base_url=platform.gateway.url, headers=victim["cert"]) as http:
        return http.get(f"{CONSENTS}/{victim['consent']}").json()["data"]["status"]


# --- 1. path traversal --------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/open-banking/consents/v3/../../../_sim/consents/{consent}/authorise",
    "/open-banking/consents/v3/%2e%2e/%2e%2e/%2e%2e/_sim/consents/{consent}/authorise",
    "/open-banking/consents/v3/../../../metrics",
    "/open-banking/consents/v3/../../../openapi.json",
    "/open-banking/consents/v3/consents%2f..%2f..%2f..%2fmetrics",
])
def test_dot_segments_never_reach_module_internals(platform, victim, org_a, target):
    before = consent_status(platform, victim)
    answer = raw(platform.gateway.port, request_head("POST", target.format(consent=victim["consent"]), org_a))
    answer.of_error(400)
    assert consent_status(platform, victim) == before


def test_a_dot_segment_does_not_dodge_the_tpm_limit(platform, pki):
    if time.time() % 60 > 45:  # the limit is per clock minute: stay inside one
        time.sleep(61 - time.time() % 60)
    cert = {"x-ssl-client-cert": pki.issue(f"org-tpm-{secrets.token_hex(3)}").header}
    limit = load_catalog(platform.catalog).match("GET", ACCOUNTS).tpm
    statuses = [raw(platform.gateway.port, request_head("GET", ACCOUNTS, cert)).status for _ in range(limit)]
    assert 429 not in statuses
    assert raw(platform.gateway.port, request_head("GET", ACCOUNTS, cert)).status == 429
    dodge = raw(platform.gateway.port, request_head("GET", "/open-banking/accounts/v2/x/../accounts", cert))
    dodge.of_error(400)


# --- 2. simulation routes -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/_sim/consents/{consent}/authorise",
                                  "/_sim/payments/consents/{pay}/authorise"])
def test_the_gateway_never_routes_simulation(platform, victim, org_a, path):
    target = path.format(consent=victim["consent"], pay=victim["payment_consent"])
    raw(platform.gateway.port, request_head("POST", target, org_a)).of_error(404)


def test_a_module_answers_simulation_only_for_the_consents_organisation(platform, pki):
    org = f"org-c-{secrets.token_hex(3)}"
    cert = {"x-ssl-client-cert": pki.issue(org).header}
    with httpx.Client(base_url=platform.gateway.url, headers=cert) as http:
        cid = http.post(CONSENTS, json=consent_request()).json()["data"]["consentId"]
    module = platform.services["consents"].port
    authorise = f"/_sim/consents/{cid}/authorise"
    raw(module, request_head("POST", authorise, {"x-ofsre-client-org-id": org})).of_error(401)  # no secret
    stranger = {**platform.module_headers, "x-ofsre-client-org-id": "org-intruder"}
    raw(module, request_head("POST", authorise, stranger)).of_error(403)
    raw(module, request_head("POST", authorise, platform.module_headers)).of_error(403)  # no organisation
    assert platform.bank.decide("consents", cid, org_id=org).json()["data"]["status"] == "AUTHORISED"


# --- 3. certificates that name no organisation ----------------------------------------------------

@pytest.fixture(params=["no-organisation", "the-ca-itself"])
def nameless(request, pki):
    return {"x-ssl-client-cert": pki.issue(None).header if request.param == "no-organisation" else pki.header}


def test_a_certificate_without_an_organisation_gets_nothing(platform, victim, nameless):
    token = {"authorization": f"Bearer consent:{victim['consent']}"}
    port = platform.gateway.port
    raw(port, request_head("GET", ACCOUNTS, {**nameless, **token})).of_error(403)
    raw(port, request_head("DELETE", f"{CONSENTS}/{victim['consent']}", nameless)).of_error(403)
    body = json.dumps(pix_request()).encode()
    pay = {**nameless, "authorization": f"Bearer consent:{victim['payment_consent']}",
           "x-idempotency-key": secrets.token_hex(8), "content-type": "application/json",
           "content-length": str(len(body))}
    raw(port, request_head("POST", f"{PAYMENTS}/pix/payments", pay), body).of_error(403)
    assert consent_status(platform, victim) == "AUTHORISED"
    # the payment was not made
    with httpx.Client(base_url=platform.gateway.url, headers=victim["cert"]) as http:
        answer = http.get(f"{PAYMENTS}/consents/{victim['payment_consent']}")
        consent = victim["initiator"].read(answer.text)["data"]
    assert consent["status"] == "AUTHORISED"


@pytest.mark.parametrize("path", [ACCOUNTS, "/open-banking/resources/v3/resources"])
def test_another_institutions_consent_reads_nothing(platform, victim, org_a, path):
    """Organisation A presents organisation B's authorised consent (or an unknown one): 403, no data."""
    port = platform.gateway.port
    for consent in (victim["consent"], "urn:ofsre:no-such-consent"):
        token = {"authorization": f"Bearer consent:{consent}"}
        answer = raw(port, request_head("GET", path, {**org_a, **token}))
        answer.of_error(403)
        assert b"accountId" not in answer.body
    # B still reads its own
    own = {**victim["cert"], "authorization": f"Bearer consent:{victim['consent']}"}
    with httpx.Client(base_url=platform.gateway.url, headers=own) as http:
        assert http.get(path).status_code == 200


# --- 4. client-caused 5xx -------------------------------------------------------------------------

def test_a_url_of_65_kb_is_414(platform, org_a):
    target = ACCOUNTS + "?page=" + "9" * 65_000
    raw(platform.gateway.port, request_head("GET", target, org_a)).of_error(414)


def test_two_host_headers_are_400(platform, org_a):
    head = request_head("GET", ACCOUNTS, {**org_a, "host": "evil.example"})
    raw(platform.gateway.port, head).of_error(400)


def _assert_never_logged(platform, *secrets):
    time.sleep(0.3)  # the log line, if any, is written by now
    log = platform.gateway.log.read_text(errors="replace")
    for secret in secrets:
        assert secret not in log
        assert not any(secret in json.dumps(r) for r in list(platform.loki.records))


def test_an_invalid_header_value_is_400_and_never_logged(platform, org_a):
    head = request_head("GET", ACCOUNTS, {**org_a, "authorization": "Bearer consent:TOPSECRET123\x01",
                                          "x-api-key": "APIKEYSECRET9", "cookie": "session=COOKIESECRET7"})
    raw(platform.gateway.port, head).of_error(400)
    _assert_never_logged(platform, "TOPSECRET123", "APIKEYSECRET9", "COOKIESECRET7")


@pytest.mark.parametrize("value", ["Bearer consent:TOPSECRET123 ", " Bearer consent:TOPSECRET123", "\tx\t"])
def test_whitespace_around_a_header_value_is_no_part_of_it_and_never_logged(platform, org_a, value):
    """RFC 9110 §5.5: whitespace before or after a field value is not part of it. uvicorn >= 0.55
    strips the trailing whitespace llhttp keeps (older releases passed it on, and the guard
    refused it with 400): either way the answer is a 4xx with the Open Finance body and the
    interaction id, and no credential reaches the logs."""
    head = request_head("GET", ACCOUNTS, {**org_a, "authorization": value, "x-api-key": "APIKEYSECRET9 ",
                                          "cookie": "session=COOKIESECRET7 "})
    answer = raw(platform.gateway.port, head)
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    answer.of_error(answer.status)
    _assert_never_logged(platform, "TOPSECRET123", "APIKEYSECRET9", "COOKIESECRET7")


# --- 6. size and time -----------------------------------------------------------------------------

def test_a_64_mb_header_is_431_and_costs_no_memory(platform, org_a):
    gateway = psutil.Process(platform.gateway.proc.pid)
    before = gateway.memory_info().rss
    huge = request_head("GET", ACCOUNTS, {**org_a, "x-padding": "a" * (64 << 20)})
    raw(platform.gateway.port, huge).of_error(431)
    assert gateway.memory_info().rss - before < 32 << 20


def test_a_64_kb_head_that_arrives_in_one_read_is_431(platform, org_a):
    """Under the socket's read size: the whole head arrives at once, and is counted as it is parsed."""
    padded = {**org_a, "x-padding": "c" * (64 << 10)}
    raw(platform.gateway.port, request_head("GET", ACCOUNTS, padded)).of_error(431)
    many = {f"x-h{i}": "v" * 100 for i in range(400)}   # 400 headers of ~110 bytes: ~44 KB
    raw(platform.gateway.port, request_head("GET", ACCOUNTS, {**org_a, **many})).of_error(431)
    module = platform.services["accounts"].port
    padded = {**platform.module_headers, "x-padding": "c" * (64 << 10)}
    raw(module, request_head("GET", ACCOUNTS, padded)).of_error(431)


def test_a_16_mb_header_without_a_certificate_is_431_not_401_after_reading_it(platform):
    raw(platform.gateway.port, request_head("GET", ACCOUNTS, {"x-padding": "b" * (16 << 20)})).of_error(431)


class _OneReader:
    """One buffered reader over a socket for several answers (http.client closes its reader after each)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        self.read, self.readline, self.readinto = self._file.read, self._file.readline, self._file.readinto

    def makefile(self, mode: str) -> _OneReader:
        return self

    def close(self) -> None:
        pass

    def answer(self, method: str) -> tuple[int, bytes]:
        response = http.client.HTTPResponse(self, method=method)   # type: ignore[arg-type]
        response.begin()
        return response.status, response.read()


@pytest.mark.parametrize("padding", [0, 64 << 10], ids=["small-head", "64-kb-head"])
def test_a_pipelined_head_after_a_large_body_is_counted_alone(platform, org_a, padding):
    """A POST whose body alone is larger than the head limit (16 KiB), and in the same write the start of a
    GET's head, its end once the POST is answered: a small GET is answered too (its head is not charged
    with the POST's body), a 64 KiB one is still 431."""
    body = json.dumps(consent_request()).encode() + b" " * (24 << 10)   # JSON may end in whitespace
    post = request_head("POST", CONSENTS, {**org_a, "content-type": "application/json",
                                           "content-length": str(len(body))})
    post = post.replace(b"connection: close", b"connection: keep-alive")
    get = request_head("GET", "/healthz", {"x-padding": "p" * padding} if padding else None)
    with socket.create_connection(("127.0.0.1", platform.gateway.port), timeout=20) as sock:
        reader = _OneReader(sock)
        sock.sendall(post + b"\r\n\r\n" + body + get[:20])
        status, created = reader.answer("POST")   # the GET's head still open on the server
        assert status == 201 and json.loads(created)["data"]["status"] == "AWAITING_AUTHORISATION"
        sock.sendall(get[20:] + b"\r\n\r\n")
        status, answer = reader.answer("GET")
    assert status == (431 if padding else 200), answer


def test_a_body_larger_than_the_limit_is_413_at_the_gateway_and_the_module(platform, org_a):
    body = b"{" + b" " * (2 << 20) + b"}"
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    raw(platform.gateway.port, request_head("POST", CONSENTS, {**org_a, **headers}), body).of_error(413)
    module = platform.services["consents"].port
    raw(module, request_head("POST", CONSENTS, {**platform.module_headers, **headers}), body).of_error(413)


def test_a_body_shorter_than_its_content_length_is_408(platform, org_a):
    headers = {**org_a, "content-type": "application/json", "content-length": "1000"}
    answer = raw(platform.gateway.port, request_head("POST", CONSENTS, headers), b'{"data":', timeout=30)
    answer.of_error(408)


def test_a_head_that_never_ends_is_408(platform):
    with socket.create_connection(("127.0.0.1", platform.gateway.port), timeout=30) as sock:
        sock.sendall(b"GET " + ACCOUNTS.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # and then nothing
        response = http.client.HTTPResponse(sock)
        response.begin()
        Answer(response.status, response.headers, response.read()).of_error(408)


# --- 7. modules hear only the gateway -------------------------------------------------------------

def test_a_module_refuses_a_forged_organisation_without_the_gateway_secret(platform, victim):
    port = platform.services["accounts"].port
    forged = {"x-ofsre-client-org-id": victim["org"], "authorization": f"Bearer consent:{victim['consent']}"}
    raw(port, request_head("GET", ACCOUNTS, forged)).of_error(401)
    raw(port, request_head("GET", ACCOUNTS, {**forged, "x-ofsre-gateway-secret": "guess"})).of_error(401)


def test_the_local_runtime_binds_every_process_to_loopback():
    config = RuntimeConfig()
    assert config.host == "127.0.0.1"
    assert "{host}" in config.command and "OFSRE_GATEWAY_SECRET" not in config.service_env()


# --- 8. every answer carries the interaction id and the Open Finance body ------------------------

@pytest.mark.parametrize("request_bytes", [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\nhost: x\r\n\r\n",
                                           b"GET /\x00 HTTP/1.1\r\nhost: x\r\n\r\n"])
def test_an_unparseable_request_gets_the_open_finance_400(platform, request_bytes):
    with socket.create_connection(("127.0.0.1", platform.gateway.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        response = http.client.HTTPResponse(sock)
        response.begin()
        Answer(response.status, response.headers, response.read()).of_error(400)


@pytest.mark.parametrize("service", ["gateway", "consents"])
def test_a_health_path_405_carries_the_interaction_id(platform, service):
    port = platform.gateway.port if service == "gateway" else platform.services[service].port
    iid = "6f1c1f4e-3b7a-4d57-9c2e-0a1b2c3d4e5f"
    answer = raw(port,
                 request_head("POST", "/healthz", {"x-fapi-interaction-id": iid, "content-length": "0"}))
    answer.of_error(405)
    assert answer.headers["x-fapi-interaction-id"] == iid


# --- the property: whatever the path and headers ---------------------------------------------------

_SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "", "%2e%2e", "%2E.", ".%2e", "%2f", "%2F", "%5c", "\\", "%00", "%0a", "%20",
                     "consents", "accounts", "pix", "payments", "_sim", "metrics", "openapi.json", "v2", "v3",
                     "v4", "{consentId}", "urn:ofsre:x", "%ff", "%", "%zz", ";x=1", "~", "a" * 300]),
    st.text(alphabet="abc-._~%2e/", min_size=1, max_size=12))
_PATH = st.builds(lambda prefix, segs: prefix + "/".join(segs),
                  st.sampled_from(["/open-banking/consents/v3/", "/open-banking/accounts/v2/",
                                   "/open-banking/payments/v4/", "/open-banking/", "/", "/_sim/", "//"]),
                  st.lists(_SEGMENT, max_size=6))
_HEADER_VALUE = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                          st.sampled_from([" x", "x ", "a\tb", "\t", "ü", "x" * 2000]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH"]), path=_PATH,
       query=st.sampled_from(["", "?page=1", "?a=%2e%2e/x", "?" + "q" * 9000]),
       extra=st.dictionaries(st.sampled_from(["x-odd", "content-length", "transfer-encoding", "authorization",
                                              "x-ofsre-client-org-id", "x-ofsre-gateway-secret"]),
                             _HEADER_VALUE, max_size=3))
def test_whatever_is_sent_the_gateway_answers_as_open_finance(platform, org_a, method, path, query, extra):
    target = quote(path, safe="/%:;=~.-_\\{}") + query
    head = request_head(method, target.encode("latin-1"), {**org_a, **extra})
    try:
        answer = raw(platform.gateway.port, head, timeout=15)
    except (ConnectionResetError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
        pytest.fail(f"the gateway dropped {method} {target!r} without an answer: {exc!r}")
    assert answer.status < 500, (method, target, extra, answer.status, answer.body[:300])
    assert is_valid_interaction_id(answer.headers.get("x-fapi-interaction-id", "").encode())
    if answer.status >= 400 and method != "HEAD":
        answer.of_error(answer.status)
    if answer.status < 400:  # it reached a module: only through a route the catalog lists and a module serves
        decoded = canonical_path({"path": _unquote(path), "raw_path": path.encode("latin-1")})
        entry = load_catalog(platform.catalog).match(method, decoded or "")
        assert decoded is not None and entry is not None and entry.api in SERVICE_OF_API, (method, target)


def _unquote(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)
