"""The journeys of a receiving institution, as Locust users (``FastHttpUser``).

Import this module only after ``locust`` (a locustfile does; see the gevent pitfall in
``loadtests/README.md``). Each persona is one institution (:mod:`.personas`) calling the
platform through its gateway:

* **account reads** on an authorised consent: accounts list → balances → transactions,
  following ``links.next`` for a few pages → current transactions;
* **new consent**: ``POST /consents`` → simulated authorisation → ``GET /consents/{id}`` →
  ``GET /resources`` (unless ``--skip-resources``) → first reads → now and then ``DELETE``;
* **payment**: payment consent (``x-idempotency-key``) → simulated authorisation → Pix payment
  (``x-idempotency-key``) → status polled until settled (``ACSC``/``RJCT``); bodies both ways
  are JWS (``application/jwt``, :mod:`.signing`), the persona's key registered in ``--jwks-dir``;
* **open data**: unauthenticated reads of an open-data family (:class:`OpenDataUser`).

Every request carries a fresh ``x-fapi-interaction-id`` and fails unless the answer echoes it;
requests are named by the catalog's route template (``/…/accounts/{accountId}/balances``), so
Locust's statistics group exactly like the platform's metrics. 529 answers are renamed
``<route> [529 capacity]`` and 429 answers the suite can justify from its own count
``<route> [429 TPM]``; both count as answered, not failed (:mod:`.thresholds`).

Simulated authorisation (the customer approving the consent at the bank) is a test-only call
the gateway never routes: it goes to the modules themselves, as the gateway would call them,
with the gateway secret in ``x-ofsre-gateway-secret`` and the organisation in
``x-ofsre-client-org-id``. Where: ``--runtime-data-dir`` (a local runtime's data directory: its
``upstreams.json`` and ``gateway.secret``), or ``--sim-consents-url``/``--sim-payments-url``
with ``OFSRE_GATEWAY_SECRET`` in the environment; by default the target host itself.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.lock import Semaphore
from gevent.pool import Pool
from locust import FastHttpUser, User, between, task

from ofsre.instrumentation._config import GATEWAY_SECRET, ORG_ID
from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.openfinance import format_datetime

from . import personas
from .signing import MEDIA_TYPE, PersonaSigner
from .thresholds import CAPACITY_SUFFIX, MONTHLY_SUFFIX, TPM_SUFFIX, TpmLedger

__all__ = ["Persona", "EcosystemUser", "OpenDataUser", "ArrivalRateUser", "ROUTES"]

CATALOG = load_catalog()
INTERACTION_ID = "x-fapi-interaction-id"
CAPACITY_STATUS = int(CATALOG.ecosystem.get("capacity_status", 529))
TPM_STATUS = int(CATALOG.ecosystem.get("tpm_status", 429))
MONTHLY_STATUS = int(CATALOG.ecosystem.get("operational_limit_status", 423))


def _monthly_limit(method: str, route: str) -> int | None:
    """The endpoint's monthly operational limit per consent and resource (its tier's), or None."""
    entry = CATALOG.lookup(method, route)
    if entry is None or entry.tpm is None or entry.tier.monthly_limit <= 0:
        return None
    return entry.tier.monthly_limit


def _route(method: str, template: str) -> str:
    """A template the catalog knows (a typo fails at import, not as a silent unnamed stat)."""
    if CATALOG.lookup(method, template) is None:
        raise LookupError(f"{method} {template} is not in the endpoint catalog")
    return template


CONSENTS = _route("POST", "/open-banking/consents/v3/consents")
CONSENT = _route("GET", "/open-banking/consents/v3/consents/{consentId}")
_route("DELETE", CONSENT)
RESOURCES = _route("GET", "/open-banking/resources/v3/resources")
ACCOUNTS = _route("GET", "/open-banking/accounts/v2/accounts")
BALANCES = _route("GET", "/open-banking/accounts/v2/accounts/{accountId}/balances")
TRANSACTIONS = _route("GET", "/open-banking/accounts/v2/accounts/{accountId}/transactions")
TRANSACTIONS_CURRENT = _route("GET", "/open-banking/accounts/v2/accounts/{accountId}/transactions-current")
PAYMENT_CONSENTS = _route("POST", "/open-banking/payments/v4/consents")
PIX_PAYMENTS = _route("POST", "/open-banking/payments/v4/pix/payments")
PIX_PAYMENT = _route("GET", "/open-banking/payments/v4/pix/payments/{paymentId}")
OPEN_DATA = tuple(_route("GET",
                         e.route) for e in CATALOG if e.api.startswith("opendata-") and e.method == "GET")
ROUTES = (CONSENTS, CONSENT, RESOURCES, ACCOUNTS, BALANCES, TRANSACTIONS, TRANSACTIONS_CURRENT,
          PAYMENT_CONSENTS, PIX_PAYMENTS, PIX_PAYMENT, *OPEN_DATA)
_READ_LIMITS = {r: n for r in (ACCOUNTS, BALANCES, TRANSACTIONS, TRANSACTIONS_CURRENT)
                if (n := _monthly_limit("GET", r)) is not None}
SIM_CONSENT = "/_sim/consents/{consentId}/authorise"
SIM_PAYMENT_CONSENT = "/_sim/payments/consents/{consentId}/authorise"
SETTLED = ("ACSC", "RJCT")
DATA_PERMISSIONS = ["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ", "ACCOUNTS_TRANSACTIONS_READ", "RESOURCES_READ"]

CREDITOR_ACCOUNT = {"ispb": "12345678", "issuer": "0001", "number": "1234567890", "accountType": "CACC"}
_institution_seq = itertools.count()


def _end_to_end_id() -> str:
    """A Pix endToEndId: E + the initiator's ISPB + yyyyMMddHHmm (UTC) + 11 random characters."""
    return f"E{CREDITOR_ACCOUNT['ispb']}{datetime.now(UTC):%Y%m%d%H%M}{uuid.uuid4().hex[:11]}"
_RATE_STEP_S = 0.25  # the open model re-reads its target rate at least this often


def _option(environment, name: str, default: Any) -> Any:
    opts = getattr(environment, "parsed_options", None)
    value = getattr(opts, name, None) if opts is not None else None
    return default if value is None else value


def _institutions(environment) -> list[personas.Institution]:
    cache = getattr(environment, "_ofsre_institutions", None)
    if cache is None:
        pki = _option(environment, "pki_dir", "")
        count = int(_option(environment, "institutions", personas.DEFAULT_INSTITUTIONS))
        cache = personas.load_institutions(pki)[:count] if pki else personas.anonymous_institutions(count)
        environment._ofsre_institutions = cache
    return cache


def _ledger(environment) -> TpmLedger:
    ledger = getattr(environment, "_ofsre_ledger", None)
    if ledger is None:
        ledger = environment._ofsre_ledger = TpmLedger(CATALOG)
    return ledger


class SimulationTargets:
    """Where the simulated authorisation is: fixed URLs, or a local runtime's data directory
    (``upstreams.json`` re-read when it changes, so new replicas are used; ``gateway.secret``)."""

    def __init__(self, environment, host: str) -> None:
        self.data_dir = str(_option(environment, "runtime_data_dir", "") or "")
        self.fixed = {"consents": str(_option(environment, "sim_consents_url", "") or host).rstrip("/"),
                      "payments": str(_option(environment, "sim_payments_url", "") or host).rstrip("/")}
        self.secret = GATEWAY_SECRET.from_env() or ""
        self._mtime = -1.0
        self._table: dict[str, list[str]] = {}
        if self.data_dir and not self.secret:
            secret = os.path.join(self.data_dir, "gateway.secret")
            if os.path.exists(secret):
                with open(secret) as f:
                    self.secret = f.read().strip()

    def base(self, service: str) -> str:
        if not self.data_dir:
            return self.fixed[service]
        path = os.path.join(self.data_dir, "upstreams.json")
        try:
            mtime = os.stat(path).st_mtime
            if mtime != self._mtime:
                with open(path) as f:
                    self._table, self._mtime = json.load(f), mtime
        except (OSError, ValueError):
            pass  # keep the last table: the runtime rewrites the file atomically
        replicas = self._table.get(service) or []
        return random.choice(replicas).rstrip("/") if replicas else self.fixed[service]


def _simulation(environment, host: str) -> SimulationTargets:
    sim = getattr(environment, "_ofsre_simulation", None)
    if sim is None:
        sim = environment._ofsre_simulation = SimulationTargets(environment, host)
    return sim


def _path_of(link: str) -> str:
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Persona:
    """One institution's journeys over a Locust HTTP client (shared by its greenlets)."""

    def __init__(self, user: FastHttpUser, institution: personas.Institution) -> None:
        env = user.environment
        self.client = user.client
        self.host = (user.host or "").rstrip("/")
        self.institution = institution
        self.ledger = _ledger(env)
        self.rng = random.Random()
        self.cert_header = str(_option(env, "client_cert_header", "x-ssl-client-cert"))
        self.simulation = _simulation(env, self.host)
        self.skip_resources = bool(_option(env, "skip_resources", False))
        self.pages = int(_option(env, "transaction_pages", 3))
        self.polls = int(_option(env, "payment_polls", 10))
        self.poll_interval = float(_option(env, "payment_poll_interval", 0.5))
        self.mix = personas.Mix.parse(str(_option(env, "mix", "")))
        self.cpf = self.rng.choice(personas.CPFS)
        self.consent: str | None = None
        self.account: str | None = None
        data_dir = str(_option(env, "runtime_data_dir", "") or "")
        self.jwks_dir = str(_option(env, "jwks_dir",
                                    "") or (os.path.join(data_dir, "jwks") if data_dir else "jwks"))
        self.platform_org = str(_option(env, "platform_org", "") or ORG_ID.from_env())
        self._signer: PersonaSigner | None = None
        self.per_connection = int(_option(env, "requests_per_connection", 20) or 0)
        self.sent = 0
        self.uses: dict[str, int] = {}  # calls counted against the consent's monthly limits, by route
        self._consent_lock = Semaphore()

    # ----------------------------------------------------------------- one request

    def call(self, method: str, route: str, path: str | None = None, *, expect: tuple[int, ...] = (200,),
             json: Any = None, consent: str | None = None, idempotent: bool = False,
             authenticated: bool = True, signed: bool = False) -> Any:
        """One request named ``route``; the parsed body when the answer is as expected, else None.
        ``signed``: payments v4 — the body (``json``) goes as a JWS and the answer must be one."""
        iid = personas.new_interaction_id()
        headers = {INTERACTION_ID: iid}
        data = None
        if signed:
            headers.update(self.signer.headers)
            if json is not None:
                data, json = self.signer.sign(json, self.host + (path or route)), None
        if authenticated and self.institution.cert_header:
            headers[self.cert_header] = self.institution.cert_header
        if consent:
            headers["authorization"] = f"Bearer consent:{consent}"
        if idempotent:
            headers["x-idempotency-key"] = personas.new_interaction_id()
        self.sent += 1
        if self.per_connection and self.sent % self.per_connection == 0:
            # A fresh connection now and then, as real clients' pools do: new gateway replicas
            # behind a load balancer only ever get new connections.
            headers["connection"] = "close"
        if consent and "pagination-key" not in (path or ""):  # paging on does not count (§3)
            self.uses[route] = self.uses.get(route, 0) + 1
        origin = self.institution.origin if authenticated else "client-ip"
        sent_at = time.time()
        count = self.ledger.count(origin, method, route, sent_at)
        with self.client.request(method, path or route, name=route, headers=headers, json=json, data=data,
                                 catch_response=True) as resp:
            status = resp.status_code
            if status == CAPACITY_STATUS:
                resp.request_meta["name"] = route + CAPACITY_SUFFIX
                resp.success()
                return None
            if status == TPM_STATUS:
                if self.ledger.justified(origin, method, route, count, sent_at):
                    resp.request_meta["name"] = route + TPM_SUFFIX
                    resp.success()
                else:
                    resp.failure(f"429 although the suite sent only {count} calls to {route} this minute")
                return None
            if status == MONTHLY_STATUS and consent:
                resp.request_meta["name"] = route + MONTHLY_SUFFIX
                resp.success()
                if self.consent == consent:
                    self.consent = None  # used up: the next journey asks the customer for a new one
                return None
            if status not in expect:
                body = (resp.text or "")[:200] if resp.content else ""
                if signed and resp.content and MEDIA_TYPE in (resp.headers.get("content-type") or ""):
                    try:
                        body = str(self.signer.read(resp.text).get("errors"))[:200]
                    except ValueError:
                        pass
                resp.failure(f"{status} (expected {'/'.join(map(str, expect))}) {body}")
                return None
            if resp.headers.get(INTERACTION_ID) != iid:
                resp.failure(f"{INTERACTION_ID} not echoed (sent {iid}, got "
                             f"{resp.headers.get(INTERACTION_ID)})")
                return None
            try:
                if signed:
                    return self.signer.read(resp.text)
                return resp.json() if resp.content else {}
            except ValueError as exc:
                resp.failure(f"{status}: {exc}" if signed else f"{status} with a body that is not JSON")
                return None

    def simulate(self, service: str, template: str, consent_id: str) -> bool:
        """The customer authorises the consent (test-only route, outside the catalog's thresholds)."""
        headers = {INTERACTION_ID: personas.new_interaction_id()}
        if self.simulation.secret:
            headers["x-ofsre-gateway-secret"] = self.simulation.secret
            if self.institution.cert_header:  # the consent's owner; none without mTLS
                headers["x-ofsre-client-org-id"] = self.institution.org_id
        url = self.simulation.base(service) + template.format(consentId=consent_id)
        with self.client.request("POST", url, name=template, headers=headers, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"simulated authorisation answered {resp.status_code}")
                return False
        return True

    # ----------------------------------------------------------------- journeys

    def run(self, journey: str | None = None) -> None:
        """One journey, by name or drawn from the mix."""
        name = journey or personas.pick(self.rng, self.mix.weights())
        getattr(self, name)()

    @property
    def signer(self) -> PersonaSigner:
        """The institution's payments signing key, registered in the JWKS directory on first use."""
        if self._signer is None:
            self._signer = PersonaSigner(self.institution.org_id, self.jwks_dir, self.platform_org)
        return self._signer

    def new_consent(self) -> str | None:
        expires = format_datetime(datetime.now(UTC) + timedelta(days=90))
        body = {"data": {"loggedUser": {"document": {"identification": self.cpf, "rel": "CPF"}},
                         "permissions": DATA_PERMISSIONS, "expirationDateTime": expires}}
        created = self.call("POST", CONSENTS, expect=(201,), json=body)
        consent_id = ((created or {}).get("data") or {}).get("consentId")
        if not consent_id or not self.simulate("consents", SIM_CONSENT, consent_id):
            return None
        got = self.call("GET", CONSENT, CONSENT.format(consentId=consent_id))
        if ((got or {}).get("data") or {}).get("status") != "AUTHORISED":
            return None
        if not self.skip_resources:
            self.call("GET", RESOURCES, consent=consent_id)
        self.consent, self.account, self.uses = consent_id, None, {}
        self.account_reads()
        if self.rng.random() < self.mix.revoke_probability:
            self.call("DELETE", CONSENT, CONSENT.format(consentId=consent_id), expect=(204,))
            self.consent = None
        return consent_id

    def _ensure_consent(self) -> str | None:
        with self._consent_lock:  # greenlets of one persona share one consent
            if self.consent is None:
                self.new_consent()
            return self.consent

    def _within_monthly_limits(self) -> bool:
        """Whether one more round of reads stays within the consent's monthly limits."""
        return all(self.uses.get(route, 0) + (self.pages if route == TRANSACTIONS else 1) <= limit
                   for route, limit in _READ_LIMITS.items())

    def account_reads(self) -> None:
        if self.consent is not None and not self._within_monthly_limits():
            self.consent = None  # as a receiver does: ask the customer for a new consent
        consent = self.consent or self._ensure_consent()
        if consent is None:
            return
        if self.account is None:
            listed = self.call("GET", ACCOUNTS, consent=consent)
            accounts = (listed or {}).get("data") or []
            if not accounts:
                return
            self.account = accounts[0]["accountId"]
        else:
            self.call("GET", ACCOUNTS, consent=consent)
        account = self.account
        self.call("GET", BALANCES, BALANCES.format(accountId=account), consent=consent)
        path: str | None = TRANSACTIONS.format(accountId=account) + "?page-size=25"
        for _ in range(self.pages):
            page = self.call("GET", TRANSACTIONS, path, consent=consent)
            nxt = ((page or {}).get("links") or {}).get("next")
            if not nxt:
                break
            path = _path_of(nxt)
        self.call("GET", TRANSACTIONS_CURRENT, TRANSACTIONS_CURRENT.format(accountId=account),
                  consent=consent)

    def payment(self) -> None:
        amount = f"{self.rng.randint(1, 500)}.{self.rng.randint(0, 99):02d}"
        body = {"data": {
            "loggedUser": {"document": {"identification": self.cpf, "rel": "CPF"}},
            "creditor": {"personType": "PESSOA_NATURAL", "cpfCnpj": "52431875069",
                         "name": "Maria Recebedora"},
            "payment": {"type": "PIX", "currency": "BRL", "amount": amount,
                        "details": {"localInstrument": "MANU", "creditorAccount": CREDITOR_ACCOUNT}}}}
        created = self.call("POST", PAYMENT_CONSENTS, expect=(201,), json=body, idempotent=True, signed=True)
        consent_id = ((created or {}).get("data") or {}).get("consentId")
        if not consent_id or not self.simulate("payments", SIM_PAYMENT_CONSENT, consent_id):
            return
        pay = {"data": [{
            "endToEndId": _end_to_end_id(), "localInstrument": "MANU",
            "payment": {"amount": amount, "currency": "BRL"},
            "creditorAccount": CREDITOR_ACCOUNT, "cnpjInitiator": "12345678000195", "consentId": consent_id,
            "remittanceInformation": "ofsre load test"}]}
        paid = self.call("POST", PIX_PAYMENTS, expect=(201,), json=pay, consent=consent_id, idempotent=True,
                         signed=True)
        items = (paid or {}).get("data") or []
        if not items:
            return
        payment_id = items[0]["paymentId"]
        for _ in range(self.polls):
            got = self.call("GET", PIX_PAYMENT, PIX_PAYMENT.format(paymentId=payment_id), consent=consent_id,
                            signed=True)
            if ((got or {}).get("data") or {}).get("status") in SETTLED:
                return
            gevent.sleep(self.poll_interval)

    def open_data(self) -> None:
        route = self.rng.choice(OPEN_DATA)
        self.call("GET", route, authenticated=False)


def _think_time(user: User) -> float:
    raw = str(_option(user.environment, "think_time", "") or "")
    low, high = personas.DEFAULT_THINK_TIME
    if raw:
        parts = [float(x) for x in raw.split(",")]
        low, high = parts[0], parts[-1]
    return random.uniform(low, high)


class EcosystemUser(FastHttpUser):
    """A receiving institution running the journey mix (closed model: one journey, then think)."""

    abstract = True  # locustfiles subclass it, so importing it never adds a user class by accident
    wait_time = _think_time
    network_timeout = float(CATALOG.ecosystem.get("client_timeout_s", 15))
    """The regulator's client timeout: past it the server answers 504."""
    connection_timeout = 5.0

    def on_start(self) -> None:
        institutions = _institutions(self.environment)
        self.persona = Persona(self, institutions[next(_institution_seq) % len(institutions)])
        # Open data has its own user class; the persona's draw covers the authenticated journeys.
        self.weights = {k: v for k, v in self.persona.mix.weights().items() if k != "open_data"}

    @task
    def journey(self) -> None:
        self.persona.run(personas.pick(self.persona.rng, self.weights))


class OpenDataUser(FastHttpUser):
    """An unauthenticated caller reading open data (weight: the mix's ``open_data`` share)."""

    abstract = True
    wait_time = _think_time

    def on_start(self) -> None:
        self.persona = Persona(self, personas.Institution("anonymous", "open-data reader"))

    @task
    def read(self) -> None:
        self.persona.open_data()


class ArrivalRateUser(FastHttpUser):
    """Open model: journeys *start* at a target rate whatever the answers' latency (locust#646).

    Each user is an arrival engine: it draws exponential inter-arrival gaps for its share
    (``rate / users``) of :meth:`target_rate` and starts every journey in a greenlet of its
    own, at most ``max_in_flight`` at once; an arrival that finds them all busy is counted as
    a *dropped iteration* (as k6's ``dropped_iterations``), never queued, so a slow platform
    cannot slow the offered load down. The locustfile's shape sets :meth:`target_rate`.
    """

    abstract = True
    max_in_flight = 50
    """Journeys one engine runs at once; more arrivals than this are dropped and counted."""
    concurrency = 50
    wait_time = between(0, 0)
    rate_function: Callable[[float], float] | None = None
    """``callable(run_seconds) -> journeys per second`` for the whole test (set by the locustfile)."""

    def on_start(self) -> None:
        institutions = _institutions(self.environment)
        self.personas = [Persona(self, inst) for inst in institutions]
        self.started = time.monotonic()
        self.pool = Pool(self.max_in_flight)

    def target_rate(self) -> float:
        fn = type(self).rate_function
        return float(fn(time.monotonic() - self.started)) if fn else 0.0

    @task
    def arrivals(self) -> None:
        engines = max(1, int(_option(self.environment, "arrival_engines", 1) or 1))
        rate = self.target_rate() / engines
        if rate <= 0:
            gevent.sleep(0.2)
            return
        gap = random.expovariate(rate)
        if gap > _RATE_STEP_S:
            # Memoryless: waiting a step without an arrival and drawing again is the same Poisson
            # process, and it follows a rate that changes while we wait.
            gevent.sleep(_RATE_STEP_S)
            return
        gevent.sleep(gap)
        persona = random.choice(self.personas)
        if self.pool.full():
            self.environment.events.request.fire(request_type="ARRIVAL", name="dropped iterations",
                                                 response_time=0, response_length=0, exception=None,
                                                 context={})
            return
        self.pool.spawn(persona.run)

    def on_stop(self) -> None:
        self.pool.kill(block=False)

