"""End to end: real Prometheus and Alertmanager on the local platform, the dashboards' queries and the rules.

What runs (all real processes on loopback):

* the platform, as ``ofsre platform up`` runs it (:class:`LocalRuntime`): gateway, consents,
  accounts, payments and worker (SQLite, the db queue, one replica each, HPAs pinned at one
  replica so nothing rescales during the test), shipping logs to the fake Loki of the
  exporter tests so the shippers' metrics exist;
* Debian's ``prometheus`` with the runtime's own scrape config (1 s scrape and evaluation) and
  the rule files ``ofsre alerts build`` writes, sending to Debian's ``prometheus-alertmanager``,
  whose only receiver is a webhook served by this test;
* traffic: the demo's Open Finance journey (consents, account reads, Pix payments settled by
  the worker) for a few seconds.

Then:

1. every metric name a panel or a rule uses is exposed by a running process (scraped from
   their ``/metrics``; the cAdvisor names exist only on a cluster, listed below with why);
2. every dashboard query (Grafana variables filled in) and every recording rule evaluates
   without error and returns data, except the few listed in :data:`NO_DATA_HERE` with the
   reason (series that only a cluster or traffic limits being hit produce), never faked;
3. the fault: the gateway's upstreams file is pointed, for payments, at a tiny server that
   answers 500 to everything (the services are not edited); Pix payment attempts then fail and
   ``OfsreAvailabilityBudgetBurn`` (1h/5m, critical) reaches the webhook receiver with its exact
   labels and annotations.

The rules are built with two config overrides, both of the kind an SRE would use:
``min_requests = 20`` (the traffic guard; the test's fault lasts seconds, not an hour) and the
namespace of the runtime. Windows stay as shipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ofsre.alerts import build as rules_build
from ofsre.alerts.config import config_from_dict
from ofsre.alerts.sli import recording_groups
from ofsre.dashboards import build_all
from ofsre.platform.runtime import LocalRuntime, RuntimeConfig, demo

from ..exporters.exporter_fakes import FakeBackend
from ..http_stub import HttpStub, Reply, Request, json_reply

pytestmark = pytest.mark.e2e

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CFG = config_from_dict({"min_requests": 20})

# Series that exist only on a cluster: the fallbacks beside them (`or process_*`) carry the panels here.
CLUSTER_ONLY = {
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet) series; the local runtime has no cgroups",
    "container_memory_working_set_bytes": "cAdvisor (kubelet) series; the local runtime has no cgroups",
}
# Exposed by `ofsre pcm send --metrics-port` (the deadline gauges) and by services with OFSRE_PCM_CAPTURE
# (the drops); the local runtime runs neither (tests/exporters/pcm and tests/platform/e2e/test_pcm.py check
# them).
PCM_ONLY = {name: "PCM reporting is off in the local runtime" for name in (
    "ofsre_pcm_deadline_seconds_left", "ofsre_pcm_backlog_reports", "ofsre_pcm_held_reports",
    "ofsre_pcm_day_reports", "ofsre_pcm_reports_dropped_total")}
# Synthesised by Prometheus for every scrape target, not exposed by a service.
PROMETHEUS_OWN = {"up"}
# Created with the first error a process swallows: a healthy platform does not expose it, so a
# process that counts one through the real instrumentation code is scraped for it instead.
ONLY_AFTER_AN_ERROR = {"ofsre_telemetry_errors_total"}
_COUNT_ONE_ERROR = (
    "from ofsre.instrumentation.metrics import count_telemetry_error\n"
    "from ofsre.instrumentation.exposition import render\n"
    "count_telemetry_error('e2e')\n"
    "print(render()[0].decode())\n")
# Queries and records that cannot have data in this test, and why. Matched by a unique substring.
NO_DATA_HERE = {
    'status=~"429|423|529"': "no TPM, operational or capacity limit is hit by the test's traffic",
    "ofsre_log_records_dropped_total": "the fake Loki accepts every batch: nothing is dropped",
    "ofsre_log_records_retried_total": "the fake Loki accepts every batch: nothing is retried",
    "ofsre_telemetry_errors_total": "no telemetry error happens (the counter appears with the first one)",
    "ofsre_pcm_": "PCM reporting is off in the local runtime (no capture, no sender)",
    'tier=~"media"': "the reference platform serves no média-tier endpoint "
                     "(credit cards and loans are not built)",
}
VARIABLES = {"$__rate_interval": "20s", "$__range": "2m", "$namespace": "ofsre", "$service": ".+",
             "$queue": ".+", "$api": ".+", "$level": ".+"}


# ----------------------------------------------------------------------------- helpers

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what() if callable(what) else what}: not within {timeout} s")


def expand(expr: str) -> str:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


class Receiver:
    """Alertmanager's webhook receiver: keeps every alert of every notification."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.stub = HttpStub(self._respond, methods=("POST",), name="alert-receiver")
        self.url = self.stub.url + "/hook"

    def _respond(self, request: Request) -> Reply:
        self.alerts.extend(json.loads(request.body).get("alerts", []))
        return 200, {}, b""

    def close(self) -> None:
        self.stub.close()

    def firing(self, name: str) -> list[dict]:
        return [a for a in self.alerts if a["labels"].get("alertname") == name and a["status"] == "firing"]


def always_500(request: Request) -> Reply:
    """The injected fault: every method of every path answered 500 with an Open Finance error body."""
    return json_reply(500, {"errors": [{"code": "INTERNAL", "title": "injected fault",
                                        "detail": "payments is down (test)"}]})


class Traffic:
    """The demo's journey in a loop on a background thread until stopped."""

    def __init__(self, runtime: LocalRuntime):
        self.runtime, self.stop, self.rounds = runtime, threading.Event(), 0
        self.journey: demo.Journey | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def _journey(self, client: httpx.Client) -> demo.Journey:
        gateway = self.runtime.endpoints()["gateway"]
        bank = demo.SimulatedBank.from_data_dir(self.runtime.paths.data_dir)
        # payments v4 is signed JWS: the journey pays as an initiator registered with this platform
        return demo.Journey(gateway, client, bank, demo.initiator_for(self.runtime.paths.data_dir))

    def _run(self) -> None:
        with httpx.Client(timeout=15.0) as client, ThreadPoolExecutor(4) as pool:
            self.journey = journey = self._journey(client)
            while not self.stop.is_set():
                try:
                    consent = journey.data_consent()
                    if consent:
                        journey.account_reads(consent, 2, pool)
                    ids = [p for p in (journey.pix_payment("12.00") for _ in range(2)) if p]
                    if ids:
                        journey.wait_settled(ids, 5)
                # a slow answer on a loaded machine: note it, keep the traffic going
                except httpx.HTTPError as exc:
                    journey.failures.append(repr(exc))
                self.rounds += 1

    def __enter__(self):
        self.thread.start()
        return self

    def settled(self, runtime: LocalRuntime) -> bool:
        """True once the worker consumed a payment message (the queue series exist from then on)."""
        for r in runtime.deployments["worker"].replicas():
            text = httpx.get(r.url + "/metrics", timeout=10).text
            if any(s.value > 0 for fam in text_string_to_metric_families(text)
                   if fam.name == "ofsre_queue_messages_consumed" for s in fam.samples):
                return True
        return False

    def why(self) -> str:
        return "journey failures: " + "; ".join((self.journey.failures if self.journey else [])[:3])

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


class Prom:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}\n→ {r.status_code} {body}"
        return body["data"]["result"]


# ----------------------------------------------------------------------------- the stack

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e-prometheus")
    loki = FakeBackend("loki")
    base = RuntimeConfig(data_dir=work / "platform", gateway_port=0, queue_backend="db", mtls=False)
    pinned = {"replicas": 1, "min_replicas": 1, "max_replicas": 1}
    cfg = replace(base.with_services(**pinned), gateway=replace(base.gateway, **pinned),
                  deregistration_delay=0.0,
                  env={"OFSRE_LOG_SHIPPER": "loki", "OFSRE_LOKI_URL": loki.url, "OFSRE_LOG_BATCH_WAIT": "0.2",
                       "OFSRE_SETTLEMENT_LATENCY_MS": "50", "OFSRE_QUEUE_POLL_MAX_SECONDS": "0.2"},
                  scrape_interval="1s")
    runtime = LocalRuntime(cfg)
    procs: list[subprocess.Popen] = []
    receiver = Receiver()
    traffic = Traffic(runtime)
    try:
        runtime.start()
        rules_dir = work / "rules"
        rules_build.write_all(replace(CFG, namespace=cfg.namespace), rules_dir)
        am_port, prom_port = free_port(), free_port()
        am_cfg = work / "alertmanager.yml"
        am_cfg.write_text(yaml.safe_dump({
            "route": {"receiver": "hook", "group_by": ["alertname", "service", "route", "long_window"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "hook",
                           "webhook_configs": [{"url": receiver.url, "send_resolved": False}]}]}))
        procs.append(subprocess.Popen(
            [ALERTMANAGER, f"--config.file={am_cfg}", f"--storage.path={work / 'am'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            stdout=(work / "alertmanager.log").open("wb"), stderr=subprocess.STDOUT))
        scrape = yaml.safe_load(runtime.scrape_config.read_text())
        scrape["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        scrape["rule_files"] = [str(rules_dir / "recording-rules.yaml"),
                                str(rules_dir / "alerting-rules.yaml")]
        scrape["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
        prom_cfg = work / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump(scrape))
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=(work / "prometheus.log").open("wb"), stderr=subprocess.STDOUT))
        for port, what in ((am_port, "alertmanager"), (prom_port, "prometheus")):
            wait_for(lambda p=port: _ready(p), 30, f"{what} ready")
        traffic.__enter__()  # the journey runs in the background for both tests
        yield runtime, Prom(f"http://127.0.0.1:{prom_port}"), receiver, traffic
    finally:
        if traffic.thread.is_alive():
            traffic.__exit__()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        runtime.stop()
        receiver.close()
        loki.close()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# ----------------------------------------------------------------------------- what is used

def used_queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every dashboard query (and variable query) and every rule."""
    out = []
    for key, d in build_all(CFG).items():
        for p in d["panels"]:
            for t in p["targets"]:
                if t["datasource"]["type"] == "prometheus":
                    out.append((f"dashboard {key}: {p['title']} [{t['refId']}]", t["expr"]))
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"dashboard {key}: variable {v['name']}", v["query"]))
    for g in recording_groups(CFG):
        for r in g["rules"]:
            out.append((f"record {r['record']}", r["expr"]))
    for g in rules_build.alert_groups(CFG):
        for r in g["rules"]:
            out.append((f"alert {r['alert']}", r["expr"]))
    return out


_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_LABEL_VALUES = re.compile(r"label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names in an expression: every ``name{…}`` selector, ``label_values(name…)`` and
    recorded name."""
    names = set(_SELECTOR.findall(expr)) | set(_LABEL_VALUES.findall(expr))
    names |= set(re.findall(r"(?<![\w$])[a-zA-Z][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+", expr))  # recorded names
    return names - {"by", "on", "without", "group_left", "ignoring"}


def test_every_metric_a_panel_or_rule_uses_is_exposed_by_a_running_process(stack):
    runtime, _prom, _receiver, traffic = stack
    wait_for(lambda: traffic.settled(runtime), 60,
             lambda: "a Pix payment settled by the worker; " + traffic.why())
    urls = [r.url for dep in runtime.all_deployments() for r in dep.replicas()]
    urls.append(runtime.endpoints()["runtime_metrics"].removesuffix("/metrics"))
    exposed: set[str] = set()
    for url in urls:
        text = httpx.get(url.rstrip("/") + "/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            exposed.add(fam.name)
            if fam.type == "counter":
                exposed.add(fam.name + "_total")
            if fam.type == "histogram":
                exposed |= {fam.name + s for s in ("_bucket", "_count", "_sum")}
            exposed |= {s.name for s in fam.samples}
    after_error = subprocess.run([sys.executable, "-c", _COUNT_ONE_ERROR], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
    for fam in text_string_to_metric_families(after_error):
        if fam.name + "_total" in ONLY_AFTER_AN_ERROR:
            assert fam.name + "_total" not in exposed, ("exposed by the healthy platform: "
                                                        "drop it from ONLY_AFTER_AN_ERROR")
            exposed |= {s.name for s in fam.samples}
    recorded = {r["record"] for g in recording_groups(CFG) for r in g["rules"]}
    missing = {}
    for where, expr in used_queries():
        for name in metric_names(expr):
            if (name in exposed or name in recorded or name in CLUSTER_ONLY or name in PROMETHEUS_OWN
                    or name in PCM_ONLY):
                continue
            missing.setdefault(name, where)
    assert missing == {}, f"used but exposed by no running process: {missing}"
    assert not (set(CLUSTER_ONLY) & exposed), ("a cluster-only series is exposed locally: "
                                               "drop it from CLUSTER_ONLY")


def test_queries_return_data_and_the_injected_fault_reaches_alertmanager(stack):
    runtime, prom, receiver, traffic = stack
    # The journey started with the stack keeps running through the fault.
    wait_for(lambda: prom.query('count(up{job="payments"} == 1)'), 30, "payments scraped")
    wait_for(lambda: traffic.rounds >= 2 and traffic.settled(runtime), 90,
             lambda: "two rounds of traffic and a settled payment; " + traffic.why())
    wait_for(lambda: prom.query("service_route:ofsre_http_server_requests_counted:rate1m"), 30, "records")
    # The fault: payments' upstream is a server answering 500 (the services are untouched).
    fault = HttpStub(always_500, name="always-500")
    upstreams = runtime.paths.upstreams
    table = json.loads(upstreams.read_text())
    table["payments"] = [fault.url]
    tmp = upstreams.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    tmp.replace(upstreams)
    wait_for(lambda: prom.query(
        'sum(service_route:ofsre_http_server_requests_errors:rate1m{service="gateway", api="payments"}) > 0'),
        60, "gateway 5xx for payments recorded")
    alert = wait_for(lambda: [a for a in receiver.firing("OfsreAvailabilityBudgetBurn")
                              if a["labels"].get("long_window") == "1h"
                              and a["labels"]["service"] == "gateway"],
                     60, "OfsreAvailabilityBudgetBurn at the webhook")[0]
    fault.close()
    labels = alert["labels"]
    route = labels["route"]
    assert route.startswith("/open-banking/payments/v4/")
    assert labels == {"alertname": "OfsreAvailabilityBudgetBurn", "namespace": "ofsre", "service": "gateway",
                      "route": route, "method": labels["method"], "api": "payments", "tier": "alta",
                      "severity": "critical", "team": "sre", "long_window": "1h", "short_window": "5m"}
    ann = alert["annotations"]
    assert ann["summary"] == "An endpoint is spending its availability error budget too fast."
    assert re.fullmatch(rf"gateway {labels['method']} {re.escape(route)}: \d+(\.\d+)?% of the calls "
                        r"that count failed over the last 1h \(and over 5m\), 14\.4x the rate the "
                        r"99\.5% objective allows\.",
                        ann["description"]), ann["description"]
    assert ann["runbook_url"] == "https://github.com/ofsre/ofsre/blob/main/alerts/runbooks/OfsreAvailabilityBudgetBurn.md"
    assert ann["dashboard_url"] == "http://localhost:3000/d/ofsre-overview/ofsre-overview?viewPanel=1&var-namespace=ofsre"

    # Every dashboard query and every recording rule evaluates and returns data (or is listed with why).
    empty, skipped = [], set()
    for where, expr in used_queries():
        if where.startswith("alert "):
            prom.query(expand(expr))  # evaluates without error; whether it fires is the promtool tests' job
            continue
        reason = next((r for k, r in NO_DATA_HERE.items() if k in expr and r), None)
        is_variable = where.startswith("dashboard") and "variable" in where
        query = expand(_variable_query(expr) if is_variable else expr)
        result = prom.query(query)
        if reason:
            skipped.add(reason)
            continue
        if not result:
            # Windowed queries (subqueries stepped on the clock, range windows) can be empty for one
            # evaluation on a busy machine; data must still arrive within a few scrapes.
            deadline = time.monotonic() + 30
            while not result and time.monotonic() < deadline:
                time.sleep(1)
                result = prom.query(query)
        if not result:
            empty.append(f"{where}: {expand(expr)}")
    assert empty == [], "queries without data:\n" + "\n".join(empty)
    assert skipped == {r for r in NO_DATA_HERE.values() if r}, ("a NO_DATA_HERE entry matches nothing: "
                                                                "remove it")


def _variable_query(q: str) -> str:
    """``label_values(metric{sel}, label)`` → the PromQL Grafana runs for it:
    ``count by (label) (metric{sel})``."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", q)
    assert m, q
    return f"count by ({m.group(2)}) ({m.group(1)})"
