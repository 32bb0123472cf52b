"""``ofsre demo``: the platform up, an Open Finance journey through the gateway, a summary, all down.

What it does, with progress on stdout:

1. starts the platform in a fresh data directory: SQLite, the ``db`` queue backend, one
   replica per service (the autoscaler runs), ``OFSRE_MTLS=off``, the gateway on a free port;
2. a data-sharing consent journey: create, simulated authorisation (called on the consents
   module directly, as the customer's decision at the bank: the gateway never routes it; see
   :mod:`.simulation`), read it back, then a burst of account reads (list, account, balances,
   current transactions); past an endpoint's monthly operational limit (the catalog's, e.g. 8
   list calls a month for the baixa tier) the answer is 423, and the demo expects exactly that;
3. Pix payments as a real initiator makes them (payments v4 is signed JWS both ways): the demo
   registers its own signing key in the platform's JWKS directory, signs the payment consent and
   the payment (PS256), verifies every signed answer, authorises (simulated), and polls until
   the worker settled it (``ACSC``);
4. a summary read back from the services' own ``/metrics``: requests by route and status,
   p95 per route against the catalog's limit, payments settled, queue statistics, replicas;
5. a few minutes of ecosystem traffic with a spike (``ofsre loadtest verify-scaling`` on this
   running platform, in a process of its own): the gateway and the modules scale up, back down
   after the (demo-short: 30 s) stabilisation window, and the scaling verdict table and the
   report's path (``--report``, default ``./scaling-report``) are printed; ``--no-scaling`` skips it;
6. stops everything.

Exit status 0 only if every step of the journey answered as the specification says, every
payment settled and the scaling verdict passed. ``--keep`` keeps the data directory (logs, SQLite file); on
failure it is always kept and its path printed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from ofsre.instrumentation import semconv
from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.openfinance import format_datetime

from ..contracts import PIX_FINAL
from ..jws import JwsConfig, JwsError, Participant
from .config import RuntimeConfig
from .hpa import ControllerConfig
from .runtime import LocalRuntime, RuntimeStartError
from .scrape import Sample, buckets, group_by, histogram_quantile, scrape, total
from .simulation import SimulatedBank

__all__ = ["configure", "run_demo", "Journey", "summarise", "initiator_for"]

CONSENTS = "/open-banking/consents/v3/consents"
ACCOUNTS = "/open-banking/accounts/v2/accounts"
PAYMENT_CONSENTS = "/open-banking/payments/v4/consents"
PIX_PAYMENTS = "/open-banking/payments/v4/pix/payments"
CPF = "76109277673"  # a made-up customer; the accounts service seeds its accounts from it
INITIATOR = "ofsre-demo-initiator"  # the demo's organisationId as a payment initiator


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="where to run (default: a fresh temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data directory (logs, SQLite) afterwards")
    parser.add_argument("--reads", type=int, default=8,
                        help="rounds of account reads in the burst (default 8)")
    parser.add_argument("--payments", type=int, default=3, help="Pix payments to make and settle (default 3)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a payment to settle")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the ecosystem traffic and scaling verdict")
    parser.add_argument("--report", type=Path, default=Path("scaling-report"),
                        help="where the scaling report goes (default ./scaling-report)")
    parser.set_defaults(func=run_demo)


class Progress:
    def __init__(self, total_steps: int):
        self.total, self.n, self.t0 = total_steps, 0, time.monotonic()

    def step(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {text}", flush=True)

    def info(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# --------------------------------------------------------------------------- the journey

def initiator_for(data_dir: Path) -> Participant:
    """The demo's payment initiator for the platform in ``data_dir``: a new signing key, registered
    in that platform's JWKS directory (where its payments service looks initiators up)."""
    return Participant.register(INITIATOR, JwsConfig.from_env(data_dir=data_dir).jwks_dir)


@dataclass
class Journey:
    """The Open Finance calls, each checked against the status the specification gives."""

    gateway: str
    client: httpx.Client
    bank: SimulatedBank
    initiator: Participant
    failures: list[str] = field(default_factory=list)
    calls: int = 0

    def call(self, method: str, path: str, expect: int, *, consent: str | None = None,
             json: Any = None, idempotent: bool = False) -> dict:
        headers = {"x-fapi-interaction-id": str(uuid.uuid4())}
        if consent:
            headers["authorization"] = f"Bearer consent:{consent}"
        if idempotent:
            headers["x-idempotency-key"] = str(uuid.uuid4())
        resp = self._send(method, path, (expect,), headers=headers, json=json)
        return (resp.json() if resp.content else {}) if resp is not None else {}

    def _send(self, method: str, path: str, expect: tuple[int, ...], **kw) -> httpx.Response | None:
        """One call; None (and a failure noted) unless it answered one of ``expect``."""
        self.calls += 1
        try:
            resp = self.client.request(method, self.gateway + path, **kw)
        except httpx.HTTPError as exc:
            self.failures.append(f"{method} {path}: {exc!r}")
            return None
        if resp.status_code not in expect:
            wanted = " or ".join(map(str, expect))
            self.failures.append(f"{method} {path}: {resp.status_code} (expected {wanted}) {resp.text[:300]}")
            return None
        return resp

    def read(self, path: str, consent: str) -> int | None:
        """One account read; its status (200, or 423 past the monthly operational limit)."""
        resp = self._send("GET", path, (200, 423), headers={"x-fapi-interaction-id": str(uuid.uuid4()),
                                                            "authorization": f"Bearer consent:{consent}"})
        return resp.status_code if resp is not None else None

    def signed(self, path: str, expect: int, body: dict, *, consent: str | None = None) -> dict:
        """A payments v4 POST: ``body`` signed by the demo's key, the signed answer verified."""
        url = self.gateway + path
        headers = {**self.initiator.headers, "x-fapi-interaction-id": str(uuid.uuid4()),
                   "x-idempotency-key": str(uuid.uuid4())}
        if consent:
            headers["authorization"] = f"Bearer consent:{consent}"
        return self._verified("POST", path, expect, content=self.initiator.sign(body, url), headers=headers)

    def _verified(self, method: str, path: str, expect: int, **kw) -> dict:
        resp = self._send(method, path, (expect,), **kw)
        if resp is None:
            return {}
        try:
            return self.initiator.read(resp.text)
        except JwsError as exc:
            self.failures.append(f"{method} {path}: the signed answer does not verify ({exc.detail})")
            return {}

    def authorise(self, service: Literal["consents", "payments"], consent_id: str) -> None:
        """The customer's simulated approval, on the module itself (never through the gateway)."""
        self.calls += 1
        try:
            resp = self.bank.decide(service, consent_id, client=self.client)
        except httpx.HTTPError as exc:
            self.failures.append(f"authorising {consent_id}: {exc!r}")
            return
        if resp.status_code != 200:
            self.failures.append(f"authorising {consent_id}: {resp.status_code} {resp.text[:300]}")

    def data_consent(self) -> str | None:
        expires = format_datetime(datetime.now(UTC) + timedelta(days=90))
        body = {"data": {"loggedUser": {"document": {"identification": CPF, "rel": "CPF"}},
                         "permissions": ["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ",
                                         "ACCOUNTS_TRANSACTIONS_READ", "RESOURCES_READ"],
                         "expirationDateTime": expires}}
        consent_id = self.call("POST", CONSENTS, 201, json=body).get("data", {}).get("consentId")
        if not consent_id:
            return None
        self.authorise("consents", consent_id)
        status = self.call("GET", f"{CONSENTS}/{consent_id}", 200).get("data", {}).get("status")
        if status != "AUTHORISED":
            self.failures.append(f"consent {consent_id} is {status}, not AUTHORISED after authorisation")
            return None
        return consent_id

    def account_reads(self, consent_id: str, rounds: int, pool: ThreadPoolExecutor) -> int:
        accounts = self.call("GET", ACCOUNTS, 200, consent=consent_id).get("data") or []
        if not accounts:
            self.failures.append("the consent's customer has no accounts")
            return 0
        account = accounts[0]["accountId"]
        paths = [ACCOUNTS, f"{ACCOUNTS}/{account}", f"{ACCOUNTS}/{account}/balances",
                 f"{ACCOUNTS}/{account}/transactions-current"]
        catalog = load_catalog()
        for path, template in zip(paths, ("", "/{accountId}", "/{accountId}/balances",
                                          "/{accountId}/transactions-current"), strict=True):
            jobs = [pool.submit(self.read, path, consent_id) for _ in range(rounds)]
            statuses = [job.result() for job in jobs]
            # the first successful calls of the month count; past the limit the answer is 423
            endpoint = catalog.lookup("GET", ACCOUNTS + template)
            if endpoint is None:
                self.failures.append(f"GET {ACCOUNTS + template} is not in the catalog: no monthly "
                                     "limit to expect")
                continue
            limit = endpoint.tier.monthly_limit
            done = 1 if path == ACCOUNTS else 0  # the list call above counted already
            expected_ok = max(0, min(rounds, limit - done))
            if statuses.count(200) != expected_ok or statuses.count(423) != rounds - expected_ok:
                self.failures.append(f"GET {path}: {statuses.count(200)} × 200 and "
                                     f"{statuses.count(423)} × 423, expected {expected_ok} and "
                                     f"{rounds - expected_ok} (monthly limit {limit})")
        return len(paths) * rounds + 1

    def pix_payment(self, amount: str) -> str | None:
        creditor_account = {"ispb": "12345678", "issuer": "0001", "number": "1234567890",
                            "accountType": "CACC"}
        now = datetime.now(UTC)
        consent_body = {"data": {
            "loggedUser": {"document": {"identification": CPF, "rel": "CPF"}},
            "creditor": {"personType": "PESSOA_NATURAL", "cpfCnpj": "52431875069",
                         "name": "Maria Recebedora"},
            "payment": {"type": "PIX", "date": now.date().isoformat(), "currency": "BRL", "amount": amount,
                        "details": {"localInstrument": "MANU", "creditorAccount": creditor_account}}}}
        consent_id = self.signed(PAYMENT_CONSENTS, 201, consent_body).get("data", {}).get("consentId")
        if not consent_id:
            return None
        self.authorise("payments", consent_id)
        payment_body = {"data": [{
            "endToEndId": f"E12345678{now:%Y%m%d%H%M}{uuid.uuid4().hex[:11]}", "localInstrument": "MANU",
            "payment": {"amount": amount, "currency": "BRL"}, "creditorAccount": creditor_account,
            "cnpjInitiator": "12345678000195", "remittanceInformation": "ofsre demo"}]}
        created = self.signed(PIX_PAYMENTS, 201, payment_body, consent=consent_id)
        items = created.get("data") or []
        return items[0].get("paymentId") if items else None

    def wait_settled(self, payment_ids: list[str], timeout: float) -> dict[str, str]:
        statuses: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(statuses) < len(payment_ids):
            for pid in payment_ids:
                if pid not in statuses:
                    resp = self.client.get(f"{self.gateway}{PIX_PAYMENTS}/{pid}")
                    try:
                        status = (self.initiator.read(resp.text)["data"]["status"]
                                  if resp.status_code == 200 else None)
                    except (JwsError, KeyError) as exc:
                        self.failures.append(f"GET {PIX_PAYMENTS}/{pid}: unreadable signed answer ({exc})")
                        return statuses
                    if status in PIX_FINAL:
                        statuses[pid] = status
            time.sleep(0.1)
        for pid in payment_ids:
            if statuses.get(pid) != "ACSC":
                self.failures.append(f"payment {pid} is {statuses.get(pid, 'not settled')} "
                                     f"after {timeout:g} s")
        return statuses


# --------------------------------------------------------------------------- the summary

def summarise(samples: list[Sample], service_of_url: dict[str, str], runtime_status: dict[str, Any]) -> str:
    """The printed summary, from the scraped samples and the runtime's status."""
    catalog = load_catalog()
    lines: list[str] = []
    by_service: dict[str, list[Sample]] = {}
    for s in samples:
        by_service.setdefault(service_of_url.get(s.source, "?"), []).append(s)

    requests = {service: group_by(by_service.get(service, []), semconv.HTTP_REQUESTS.series,
                                  ("method", "route", "status"))
                for service in ("gateway", "consents", "accounts", "payments")}
    width = max((len(route) for rows in requests.values() for _, route, _ in rows), default=40)
    lines.append("requests by route and status (each service's own /metrics, summed over replicas):")
    for service, rows in requests.items():
        for (method, route, status), n in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
            lines.append(f"  {service:<9} {method:<6} {route:<{width}} {status}  {n:>5.0f}")

    lines.append("")
    lines.append("p95 per route at the gateway vs the catalog's limit (the regulator's view):")
    gw = by_service.get("gateway", [])
    routes = group_by(gw, semconv.HTTP_REQUESTS.series, ("method", "route"))
    for method, route in sorted(routes, key=lambda k: (k[1], k[0])):
        entry = catalog.lookup(method, route)
        if entry is None:
            continue  # simulation and probe routes have no regulatory limit
        p95 = histogram_quantile(0.95, buckets(gw, semconv.HTTP_DURATION.name, method=method, route=route))
        verdict = "ok" if p95 is not None and p95 <= entry.p95_seconds else "OVER"
        shown = "-" if p95 is None else f"{p95 * 1000:.0f} ms"
        lines.append(f"  {method:<6} {route:<{width}} p95 {shown:>8}  limit {entry.p95_ms:>5} ms "
                     f"({entry.tier.name})  {verdict}")

    lines.append("")
    topic = {"queue": "pix-payments"}
    worker = by_service.get("worker", [])
    consumed = total(worker, semconv.QUEUE_CONSUMED.series, **topic)
    failed = group_by(worker, semconv.QUEUE_FAILED.series, ("outcome",), **topic)
    published = total(by_service.get("payments", []), semconv.QUEUE_PUBLISHED.series, **topic)
    latency = histogram_quantile(0.95, buckets(worker, semconv.QUEUE_LATENCY.name, **topic))
    processing = histogram_quantile(0.95, buckets(worker, semconv.QUEUE_PROCESSING_DURATION.name, **topic))
    lines.append(f"payments settled (worker acks on pix-payments): {consumed:.0f}")
    failures = ", ".join(f"{k[0]} {v:.0f}" for k, v in failed.items() if v) or "0"
    lines.append(f"queue pix-payments: published {published:.0f}, consumed {consumed:.0f}, failed {failures}"
                 + (f"; publish→consume p95 {latency * 1000:.0f} ms" if latency is not None else "")
                 + (f"; processing p95 {processing * 1000:.0f} ms" if processing is not None else ""))

    lines.append("")
    lines.append("replicas (runtime):")
    hpas = runtime_status.get("hpa", {})
    for name, dep in runtime_status.get("deployments", {}).items():
        h = hpas.get(name)
        scale = (f"HPA {h['current_replicas']}→{h['desired_replicas']} of "
                 f"{h['min_replicas']}-{h['max_replicas']}") \
            if h else "not autoscaled"
        lines.append(f"  {name:<9} {dep['available']} ready of {dep['spec_replicas']}  ({scale})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver

# The scaling phase's HPA, short enough for a demo: a 5 s sync, a 30 s scale-down window.
DEMO_SYNC_S, DEMO_SCALE_DOWN_S, DEMO_MAX_REPLICAS = 5.0, 30.0, 3


def _demo_config(data_dir: Path, scaling: bool = False) -> RuntimeConfig:
    cfg = RuntimeConfig(data_dir=data_dir, gateway_port=0, queue_backend="db", mtls=False)
    cfg = cfg.with_services(replicas=1)  # keeps the deregistration delay: scale-down loses no request
    if not scaling:
        return cfg
    return replace(cfg.with_services(max_replicas=DEMO_MAX_REPLICAS),
                   gateway=replace(cfg.gateway, cpu_request=0.1, max_replicas=DEMO_MAX_REPLICAS),
                   controller=ControllerConfig(sync_period=DEMO_SYNC_S),
                   scale_down=replace(cfg.scale_down, stabilization_window_seconds=DEMO_SCALE_DOWN_S))


def scaling_command(data_dir: Path, report: Path) -> list[str]:
    """The verifier on the running demo platform: a spike of ecosystem traffic (about 3 minutes)."""
    return [sys.executable, "-m", "ofsre", "loadtest", "verify-scaling", "--target", "local",
            "--data-dir", str(data_dir), "--report", str(report), "--expect-scale", "gateway",
            "--sync-period", str(DEMO_SYNC_S), "--scale-down-window", str(DEMO_SCALE_DOWN_S), "--cooldown",
            "75",
            "--", "--base-users", "4", "--spike-factor", "5", "--spike-after", "20", "--spike-seconds", "70",
            "--recovery-seconds", "60", "--shape-spawn-rate", "5", "--think-time", "0.25,0.75"]


def _scaling(data_dir: Path, args: argparse.Namespace, progress: Progress) -> bool:
    progress.step("ecosystem traffic with a spike: the platform scales up and down, then the verdict …")
    done = subprocess.run(scaling_command(data_dir, args.report), stdin=subprocess.DEVNULL)
    progress.info(f"scaling verdict {'PASS' if done.returncode == 0 else 'FAIL'}; report in {args.report}")
    return done.returncode == 0


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="      ! %(message)s")  # replica crashes, HPA warnings
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ofsre-demo-"))
    scaling = not getattr(args, "no_scaling", False)
    progress = Progress(6 if scaling else 5)
    progress.step(f"starting the platform in {data_dir} (SQLite, db queue, 1 replica each, mTLS off) …")
    runtime = LocalRuntime(_demo_config(data_dir, scaling))
    ok = scaled = False
    try:
        try:
            runtime.start()
        except RuntimeStartError as exc:
            print(f"the platform did not start: {exc}", file=sys.stderr)
            return 1
        gateway = runtime.endpoints()["gateway"]
        progress.info(f"up in {progress.elapsed():.1f} s; gateway {gateway}")
        ok = _journey(runtime, gateway, args, progress)
        scaled = _scaling(data_dir, args, progress) if ok and scaling else ok or not scaling
    finally:
        progress.step("stopping everything …")
        runtime.stop()
        keep = args.keep or not ok or not scaled
        if not keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        progress.info(f"done in {progress.elapsed():.1f} s"
                      + (f"; logs kept in {data_dir / 'logs'}" if keep else ""))
    print("journey OK" if ok else "journey FAILED", flush=True)
    if scaling and ok:
        print("scaling verdict PASS" if scaled else "scaling verdict FAIL (the table above says why)",
              flush=True)
    return 0 if ok and scaled else 1


def _journey(runtime: LocalRuntime, gateway: str, args: argparse.Namespace, progress: Progress) -> bool:
    with httpx.Client(timeout=15.0) as client, ThreadPoolExecutor(4) as pool:
        data_dir = runtime.paths.data_dir
        journey = Journey(gateway, client, SimulatedBank.from_data_dir(data_dir), initiator_for(data_dir))
        progress.step("consent journey: create → authorise (simulated) → account reads …")
        consent = journey.data_consent()
        reads = journey.account_reads(consent, args.reads, pool) if consent else 0
        progress.info(f"consent {consent or '-'}: AUTHORISED; {reads} account reads")

        progress.step(f"{args.payments} Pix payments: consent → authorise → pay → worker settles …")
        payment_ids = [p for p in (journey.pix_payment(f"{10 + i}.00") for i in range(args.payments)) if p]
        statuses = journey.wait_settled(payment_ids, args.timeout) if payment_ids else {}
        settled = sum(s == "ACSC" for s in statuses.values())
        progress.info(f"{settled} of {args.payments} settled (ACSC)")
        if len(payment_ids) < args.payments:
            journey.failures.append(f"only {len(payment_ids)} of {args.payments} payments were accepted")

    progress.step("summary from the services' own /metrics:")
    urls = {r.url: dep.name for dep in runtime.all_deployments() for r in dep.replicas()}
    summary = summarise(scrape(urls), urls, runtime.status())
    print("\n".join("      " + line for line in summary.splitlines()), flush=True)
    progress.info(f"{journey.calls} API calls, {len(journey.failures)} unexpected answers")
    for failure in journey.failures[:10]:
        progress.info(f"  ✗ {failure}")
    return not journey.failures and bool(consent)
