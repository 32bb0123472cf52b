"""The gateway: routing, round robin, failover, timeouts, mTLS, TPM/TPS limits, forwarded headers.

The upstream replicas are an ``httpx.MockTransport`` that answers with what it received (or
refuses, or hangs), except the last test, which goes through to the real accounts app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest
from prometheus_client import REGISTRY

from ofsre.instrumentation import semconv
from ofsre.instrumentation.catalog import load_catalog
from ofsre.platform.accounts.app import create_app as accounts_app
from ofsre.platform.consents.app import create_app as consents_app
from ofsre.platform.gateway.app import canonical_path, create_app
from ofsre.platform.settings import Settings

from .test_consents import assert_of_error

ACCOUNTS = "/open-banking/accounts/v2/accounts"
CONSENTS = "/open-banking/consents/v3/consents"
CONSENT = CONSENTS + "/urn:x:1"
IID = "x-fapi-interaction-id"
UPSTREAMS = {"consents": ("http://consents-1:8000",),
             "accounts": ("http://accounts-1:8000", "http://accounts-2:8000", "http://accounts-3:8000"),
             "payments": ("http://payments-1:8000",)}
TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)


class Replicas:
    """Answers as the upstream replicas: echoes what it got; ``down`` hosts refuse, ``slow`` ones hang,
    ``leaving[host]`` requests are taken and the connection closed unanswered (a replica stopping)."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.down: set[str] = set()
        self.slow: set[str] = set()
        self.leaving: dict[str, int] = {}
        self.unanswered: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.leaving.get(host, 0) > 0:
            self.leaving[host] -= 1
            self.unanswered.append(request)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request)
        if host in self.slow:
            await asyncio.sleep(30)
        self.seen.append(request)
        return httpx.Response(200, json={"replica": host, "path": request.url.raw_path.decode()},
                              headers=[("x-upstream", host), (IID, "upstream-must-not-leak"),
                                       ("connection", "keep-alive"),
                                       ("set-cookie", f"session={host}; Path=/"), ("set-cookie", "b=2")])

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.fixture
def replicas():
    return Replicas()


def gateway_settings(tmp_path, **changes) -> Settings:
    base = Settings(data_dir=tmp_path, upstreams=UPSTREAMS, mtls=False)
    return dataclasses.replace(base, **changes)


def answered(registry, service: str = "gateway", status: str = "200") -> float:
    """Requests of ``service`` the registry counted with ``status``."""
    return sum(sample.value for metric in registry.collect() for sample in metric.samples
               if sample.name == semconv.HTTP_REQUESTS.series and sample.labels.get("service") == service
               and sample.labels.get("status") == status)


async def test_routes_each_family_the_catalog_lists_to_its_module(tmp_path, serve, replicas, registry):
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry)
    counted_globally = answered(REGISTRY)
    async with serve(app) as http:
        for method, path, host in (("POST", CONSENTS, "consents-1"), ("GET", ACCOUNTS, "accounts-1"),
                                   ("GET", "/open-banking/payments/v4/pix/payments/p-1", "payments-1"),
                                   ("GET", "/open-banking/resources/v3/resources", "consents-1")):
            response = await http.request(method, path + "?a=1")
            assert response.status_code == 200 and response.json()["replica"] == host
            assert response.json()["path"] == path + "?a=1"
        # a family of the catalog that no module serves, a path the catalog does not list
        assert_of_error(await http.get("/open-banking/credit-cards-accounts/v2/accounts"), 404)
        assert_of_error(await http.get(ACCOUNTS + "/acc-1/nope"), 404)
        assert_of_error(await http.get("/elsewhere"), 404)
        wrong = assert_of_error(await http.put(CONSENTS + "/urn:x:1"), 405)
        assert "PUT" in wrong["detail"]
        assert (await http.put(CONSENTS + "/urn:x:1")).headers["allow"] == "DELETE, GET"
        assert not replicas.seen[4:]
    # The four routed requests are counted in the registry given to create_app, none in the global one.
    assert answered(registry) == 4 and answered(REGISTRY) == counted_globally


@pytest.mark.parametrize("path", ["/_sim/consents/urn:x:1/authorise",
                                  "/_sim/payments/consents/urn:x:1/authorise",
                                  "/open-banking/consents/v3/metrics",
                                  "/open-banking/accounts/v2/openapi.json"])
async def test_never_routes_what_the_catalog_does_not_list(tmp_path, serve, replicas, path, registry):
    """Not even with OFSRE_SIMULATION_ROUTES on: that setting is the modules', never the gateway's."""
    app = create_app(gateway_settings(tmp_path, simulation_routes=True), transport=replicas.transport,
                     registry=registry)
    async with serve(app) as http:
        assert (await http.post(path)).status_code in (404, 405)
        assert replicas.seen == []


@pytest.mark.parametrize("raw", [
    b"/open-banking/consents/v3/../../../_sim/consents/c-1/authorise",
    b"/open-banking/consents/v3/%2e%2e/%2e%2e/%2E%2E/metrics",
    b"/open-banking/accounts/v2/x/../accounts",
    b"/open-banking/accounts/v2/./accounts",
    b"/open-banking/accounts/v2/accounts/..",
    b"/open-banking/accounts/v2//accounts",
    b"/open-banking/accounts/v2/accounts%2facc-1",
    b"/open-banking/accounts/v2/accounts%5C..%5Cx",
    b"/open-banking/accounts/v2/accounts\\acc-1",
    b"/open-banking/accounts/v2/accounts/acc%00-1",
    b"/open-banking/accounts/v2/accounts/acc%0a-1",
])
def test_a_path_with_more_than_one_meaning_is_not_canonical(raw):
    from urllib.parse import unquote
    assert canonical_path({"path": unquote(raw.decode()), "raw_path": raw}) is None


def test_a_canonical_path_is_kept_as_decoded():
    raw = b"/open-banking/consents/v3/consents/urn%3Aofsre%3A1"
    assert canonical_path({"path": "/open-banking/consents/v3/consents/urn:ofsre:1", "raw_path": raw}) \
        == "/open-banking/consents/v3/consents/urn:ofsre:1"


async def test_round_robin_and_failover(tmp_path, serve, replicas, registry):
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry)
    async with serve(app) as http:
        hosts = [(await http.get(ACCOUNTS)).json()["replica"] for _ in range(6)]
        assert hosts == ["accounts-1", "accounts-2", "accounts-3"] * 2
        replicas.down.add("accounts-2")
        hosts = [(await http.get(ACCOUNTS)).json()["replica"] for _ in range(6)]
        assert "accounts-2" not in hosts and set(hosts) == {"accounts-1", "accounts-3"}
        replicas.down.update({"accounts-1", "accounts-3"})
        assert_of_error(await http.get(ACCOUNTS), 502, "BAD_GATEWAY")



async def test_the_upstream_clients_telemetry_errors_are_counted_in_the_apps_registry(
        tmp_path, serve, replicas, registry, monkeypatch):
    from ofsre.instrumentation import httpclient

    def broken(*args, **kwargs):
        raise RuntimeError("client span attributes down")

    monkeypatch.setattr(httpclient, "_url_full", broken)  # only the outgoing call's span reads it
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry)
    errors = {"component": "httpclient"}
    global_before = REGISTRY.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) or 0
    async with serve(app) as http:
        assert (await http.get(ACCOUNTS)).json()["replica"] == "accounts-1"  # forwarded, untraced
    assert registry.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) == 1
    assert (REGISTRY.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) or 0) == global_before


async def test_the_upstream_call_is_a_client_span_of_the_apps_tracer_provider(tmp_path, serve, replicas,
                                                                              registry):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry,
                     tracer_provider=provider)
    async with serve(app) as http:
        assert (await http.get(ACCOUNTS)).json()["replica"] == "accounts-1"
    by_kind = {span.kind: span for span in spans.get_finished_spans()}
    server, client = by_kind[SpanKind.SERVER], by_kind[SpanKind.CLIENT]
    assert client.parent.span_id == server.context.span_id
    assert client.context.trace_id == server.context.trace_id
    # and the trace goes on upstream: the replica got the client span's traceparent
    assert replicas.seen[-1].headers["traceparent"].split("-")[2] == f"{client.context.span_id:016x}"


async def test_a_replica_closing_its_connection_unanswered_is_skipped_only_when_repeating_is_safe(
        tmp_path, serve, replicas, registry):
    """A replica that is leaving may close a pooled connection as the gateway sends on it. A GET,
    or a request with an x-idempotency-key, goes to the next replica (or, with one Service URL,
    over a new connection); anything else gets the 502, never a second execution."""
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry)
    async with serve(app) as http:
        replicas.leaving["accounts-2"] = 10
        hosts = [(await http.get(ACCOUNTS)).json()["replica"] for _ in range(6)]
        assert "accounts-2" not in hosts and len(replicas.unanswered) == 2
        replicas.leaving["consents-1"] = 1
        assert_of_error(await http.post(CONSENTS, json={}), 502, "BAD_GATEWAY")
        assert [r.method for r in replicas.unanswered[2:]] == ["POST"]
        assert not [r for r in replicas.seen if r.method == "POST"]  # not sent a second time
        replicas.leaving["payments-1"] = 1
        pix = "/open-banking/payments/v4/pix/payments"
        assert (await http.post(pix, content=b"jwt", headers={"x-idempotency-key": "k-1"})).status_code == 200
        assert [r.url.host for r in replicas.seen if r.method == "POST"] == ["payments-1"]
        replicas.leaving["payments-1"] = 2  # the new connection is refused the same way: no third try
        assert_of_error(await http.get(pix + "/p-1"), 502, "BAD_GATEWAY")


async def test_a_module_without_replicas_is_502(tmp_path, serve, replicas, registry):
    app = create_app(gateway_settings(tmp_path, upstreams={}), transport=replicas.transport,
                     registry=registry)
    async with serve(app) as http:
        assert_of_error(await http.get(ACCOUNTS), 502)
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"upstreams": False}


async def test_an_upstream_slower_than_the_catalog_timeout_is_504(tmp_path, serve, replicas, catalog_file,
                                                                  registry):
    catalog = load_catalog(catalog_file(client_timeout_s=0.2))
    app = create_app(gateway_settings(tmp_path), catalog=catalog, transport=replicas.transport,
                     registry=registry)
    replicas.slow.add("consents-1")
    async with serve(app) as http:
        err = assert_of_error(await http.get(CONSENT), 504, "GATEWAY_TIMEOUT")
        assert "0.2 s" in err["detail"]


async def test_forwarded_and_dropped_headers(tmp_path, serve, replicas, registry):
    app = create_app(gateway_settings(tmp_path), transport=replicas.transport, registry=registry)
    iid = str(uuid.uuid4())
    async with serve(app) as http:
        response = await http.get(ACCOUNTS, headers={IID: iid, "x-ofsre-client-org-id": "forged",
                                                     "x-ofsre-gateway-secret": "guessed",
                                                     "x-forwarded-for": "203.0.113.9",
                                                     "authorization": "Bearer t"})
        sent = replicas.seen[-1].headers
        assert sent[IID] == iid and response.headers[IID] == iid
        assert response.headers.get_list(IID) == [iid]          # the upstream's copy does not leak
        assert "x-ofsre-client-org-id" not in sent               # only the gateway vouches for an org
        # no secret configured: none sent, none passed on
        assert "x-ofsre-gateway-secret" not in sent
        assert sent["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert sent["authorization"] == "Bearer t" and sent["host"] == "testserver"
        assert sent["traceparent"].startswith("00-")
        assert response.headers["x-upstream"] == "accounts-1" and "connection" not in response.headers
        # no id: the gateway makes one and sends it on
        generated = await http.get(ACCOUNTS)
        assert replicas.seen[-1].headers[IID] == generated.headers[IID]
        # Set-Cookie reaches the caller, but the client shared by every caller keeps none of it
        first = await http.get(CONSENT)
        assert first.headers.get_list("set-cookie") == ["session=consents-1; Path=/", "b=2"]
        assert list(app.state.proxy.client.cookies.jar) == []
        http.cookies.clear()  # the test client is the caller: it would send them back itself
        await http.get(CONSENT)
        assert "cookie" not in replicas.seen[-1].headers


# --- mTLS -----------------------------------------------------------------------------------------

@pytest.fixture
def mtls_app(tmp_path, pki, replicas, registry):
    settings = gateway_settings(tmp_path, mtls=True, client_ca_file=pki.write(tmp_path),
                                trusted_proxies=TRUSTED)
    return create_app(settings, transport=replicas.transport, registry=registry)


async def test_client_certificate_forwarded_by_a_trusted_proxy(mtls_app, serve, pki, replicas):
    cert = pki.issue("org-123")
    async with serve(mtls_app) as http:
        response = await http.get(ACCOUNTS, headers={"x-ssl-client-cert": cert.header})
        assert response.status_code == 200
        sent = replicas.seen[-1].headers
        assert sent["x-ofsre-client-org-id"] == "org-123" and "x-ssl-client-cert" not in sent


async def test_missing_certificate_is_401(mtls_app, serve):
    async with serve(mtls_app) as http:
        assert_of_error(await http.get(ACCOUNTS), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("kind", ["rogue-ca", "expired", "not-yet-valid", "garbage", "no-organisation",
                                  "the-ca-itself", "server-auth-only"])
async def test_untrusted_certificates_are_403(mtls_app, serve, pki, rogue_pki, replicas, kind):
    header = {"rogue-ca": lambda: rogue_pki.issue("org-1").header,
              "expired": lambda: pki.issue("org-1", days_valid=(-10, -1)).header,
              "not-yet-valid": lambda: pki.issue("org-1", days_valid=(1, 10)).header,
              "garbage": lambda: "-----BEGIN%20CERTIFICATE-----%0Anope%0A-----END%20CERTIFICATE-----",
              "no-organisation": lambda: pki.issue(None).header,
              "the-ca-itself": lambda: pki.header,
              "server-auth-only": lambda: pki.issue("org-1", server_auth_only=True).header}[kind]()
    async with serve(mtls_app) as http:
        assert_of_error(await http.get(ACCOUNTS, headers={"x-ssl-client-cert": header}), 403, "FORBIDDEN")
    assert replicas.seen == []


async def test_a_certificate_claimed_by_an_untrusted_peer_is_403(mtls_app, serve, pki):
    cert = pki.issue("org-123")
    async with serve(mtls_app, client=("198.51.100.7", 5555)) as http:
        err = assert_of_error(await http.get(ACCOUNTS, headers={"x-ssl-client-cert": cert.header}), 403)
        assert "untrusted peer" in err["detail"]


def test_mtls_without_a_ca_refuses_to_start(tmp_path, registry):
    with pytest.raises(ValueError, match="OFSRE_CLIENT_CA_FILE"):
        create_app(gateway_settings(tmp_path, mtls=True), registry=registry)


# --- traffic limits -------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_tpm_from_the_catalog_refuses_exactly_past_the_limit(tmp_path, serve, replicas, pki,
                                                                   catalog_file, registry):
    catalog = load_catalog(catalog_file(baixa_tpm=3))
    limit = catalog.match("GET", ACCOUNTS).tpm
    clock = Clock(60 * 28_333_333 + 5)  # 5 s into a clock minute
    settings = gateway_settings(tmp_path, mtls=True, client_ca_file=pki.write(tmp_path),
                                trusted_proxies=TRUSTED)
    app = create_app(settings, catalog=catalog, transport=replicas.transport, clock=clock, registry=registry)
    org_a = {"x-ssl-client-cert": pki.issue("org-a").header}
    org_b = {"x-ssl-client-cert": pki.issue("org-b").header}
    async with serve(app) as http:
        statuses = [(await http.get(ACCOUNTS, headers=org_a)).status_code for _ in range(limit + 1)]
        assert statuses == [200] * limit + [429]
        refused = await http.get(ACCOUNTS, headers=org_a)
        assert_of_error(refused, 429, "TOO_MANY_REQUESTS")
        assert refused.headers["retry-after"] == "55"
        assert (await http.get(ACCOUNTS, headers=org_b)).status_code == 200          # per origin
        assert (await http.get(ACCOUNTS + "/acc-1", headers=org_a)).status_code == 200  # per endpoint
        assert catalog.match("GET", CONSENTS + "/urn:x:1").tpm is None
        statuses = {(await http.get(CONSENTS + "/urn:x:1", headers=org_a)).status_code for _ in range(10)}
        assert statuses == {200}
        clock.now += 55  # the next clock minute
        assert (await http.get(ACCOUNTS, headers=org_a)).status_code == 200


async def test_without_mtls_the_origin_is_the_client_ip(tmp_path, serve, replicas, catalog_file, registry):
    catalog = load_catalog(catalog_file(baixa_tpm=1))
    app = create_app(gateway_settings(tmp_path), catalog=catalog, transport=replicas.transport, clock=Clock(),
                     registry=registry)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(serve(app, client=("10.0.0.1", 1)))
        assert [(await one.get(ACCOUNTS)).status_code for _ in range(2)] == [200, 429]
        other = await stack.enter_async_context(serve(app, client=("10.0.0.2", 1)))
        assert (await other.get(ACCOUNTS)).status_code == 200


async def test_global_tps_capacity_is_529(tmp_path, serve, replicas, registry):
    clock = Clock(1_700_000_000.25)
    app = create_app(gateway_settings(tmp_path, gateway_tps_limit=2), transport=replicas.transport,
                     clock=clock, registry=registry)
    async with serve(app) as http:
        assert [(await http.get(CONSENT)).status_code for _ in range(3)] == [200, 200, 529]
        assert_of_error(await http.get(CONSENT), 529, "SITE_IS_OVERLOADED")
        assert (await http.get("/healthz")).status_code == 200  # probes are not traffic
        clock.now += 1
        assert (await http.get(CONSENT)).status_code == 200


def test_tps_capacity_defaults_to_the_catalog(tmp_path, registry):
    app = create_app(gateway_settings(tmp_path), registry=registry)
    assert app.state.proxy.tps_limit == load_catalog().ecosystem["min_capacity_tps"]
    assert app.state.proxy.timeout_s == load_catalog().ecosystem["client_timeout_s"]


# --- through to a real module ---------------------------------------------------------------------

async def test_a_consent_journey_through_the_gateway(tmp_path, settings, serve, journeys, pki, registry):
    """Gateway → consents/accounts apps (over ASGI): the org from the certificate owns the consent."""
    modules = {"consents": consents_app(settings, registry=registry),
               "accounts": accounts_app(settings, registry=registry)}
    transports = {name: httpx.ASGITransport(app=app) for name, app in modules.items()}

    async def route(request: httpx.Request) -> httpx.Response:
        return await transports[request.url.host].handle_async_request(request)

    upstreams = {name: (f"http://{name}",) for name in modules}
    gw_settings = gateway_settings(tmp_path, upstreams=upstreams, mtls=True,
                                   client_ca_file=pki.write(tmp_path), trusted_proxies=TRUSTED)
    gateway = create_app(gw_settings, transport=httpx.MockTransport(route), registry=registry)
    cert = {"x-ssl-client-cert": pki.issue("org-journey").header}
    async with AsyncExitStack() as stack:
        for app in modules.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(serve(gateway))
        created = await http.post(CONSENTS, json=journeys.consent(), headers=cert)
        assert created.status_code == 201, created.text
        cid = created.json()["data"]["consentId"]
        assert created.json()["links"]["self"].startswith("http://testserver/")
        assert_of_error(await http.post(f"/_sim/consents/{cid}/authorise", headers=cert), 404)  # never routed
        # The customer's decision at the bank: on the module, for the consent's own organisation only
        async with httpx.AsyncClient(transport=transports["consents"], base_url="http://consents") as module:
            other = await module.post(f"/_sim/consents/{cid}/authorise",
                                      headers={"x-ofsre-client-org-id": "org-x"})
            assert_of_error(other, 403)
            owner = await module.post(f"/_sim/consents/{cid}/authorise",
                                      headers={"x-ofsre-client-org-id": "org-journey"})
            assert owner.status_code == 200, owner.text
        listed = await http.get(ACCOUNTS, headers={**cert, "authorization": f"Bearer consent:{cid}"})
        assert listed.status_code == 200 and listed.json()["data"]
        stranger = {"x-ssl-client-cert": pki.issue("org-other").header,
                    "authorization": f"Bearer consent:{cid}"}
        assert_of_error(await http.get(ACCOUNTS, headers=stranger), 403)
