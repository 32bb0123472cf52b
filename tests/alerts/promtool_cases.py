"""The ``promtool test rules`` suite of ofsre's alerts, as data.

Every alert has at least one case where it fires, with its exact labels and annotations typed
out here (never computed from the rule code), and one where it must not fire: the
minimum-traffic guard of the SLO alerts, each burn-rate boundary (an error ratio between two
windows' thresholds fires exactly the windows above it), a ratio of exactly 95 % for the
minute alert, and the healthy twin of every cause alert.

Input series are sampled every 15 s; ``counter(step)`` is a counter growing by ``step`` each
sample (``0+stepx280``: 70 minutes).
"""

from __future__ import annotations

INTERVAL = "15s"
RUNBOOK = "https://github.com/ofsre/ofsre/blob/main/alerts/runbooks/"
GRAFANA = "http://localhost:3000/d/"

PIX = "/open-banking/payments/v4/pix/payments"
EP = {"namespace": "ofsre", "service": "payments", "route": PIX, "method": "POST", "api": "payments",
      "tier": "alta"}
SCRAPE = {"job": "payments", "pod": "payments-1", "instance": "127.0.0.1:9001"}
KSM = {"job": "kube-state-metrics", "namespace": "ofsre"}


def counter(step: float, samples: int = 280) -> str:
    return f"0+{step:g}x{samples}"


def flat(value: float, samples: int = 280) -> str:
    return f"{value:g}x{samples}"


def series(name: str, labels: dict[str, str], values: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def http(status: str, step: float, labels: dict[str, str] = EP) -> dict:
    return series("ofsre_http_server_requests_total", {**labels, **SCRAPE, "status": status}, counter(step))


def buckets(status: str, steps: dict[str, float], labels: dict[str, str] = EP) -> list[dict]:
    """Histogram series: ``steps`` maps each ``le`` (cumulative) to its growth per sample."""
    out = [series("ofsre_http_server_request_duration_seconds_bucket", {**labels, **SCRAPE, "status": status,
                                                                         "le": le}, counter(step))
           for le, step in steps.items()]
    out.append(series("ofsre_http_server_request_duration_seconds_count",
                      {**labels, **SCRAPE, "status": status}, counter(steps["+Inf"])))
    return out


def test(name: str, input_series: list[dict], alerts: list[dict]) -> dict:
    return {"name": name, "interval": INTERVAL, "input_series": input_series, "alert_rule_test": alerts}


def expect(alertname: str, eval_time: str, *alerts: dict) -> dict:
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": list(alerts)}


def fired(labels: dict[str, str], description: str, summary: str, runbook: str, dashboard: str) -> dict:
    return {"exp_labels": labels, "exp_annotations": {
        "summary": summary, "description": description, "runbook_url": RUNBOOK + runbook + ".md",
        "dashboard_url": GRAFANA + dashboard}}


# ----------------------------------------------------------------------------- SLO burn rates

AVAIL_SUMMARY = "An endpoint is spending its availability error budget too fast."
LAT_SUMMARY = "An endpoint is spending its latency error budget too fast."
WINDOWS = {("1h", "5m"): ("critical", "14.4"), ("6h", "30m"): ("critical", "6"),
           ("1d", "2h"): ("warning", "3"), ("3d", "6h"): ("warning", "1")}


def avail_burn(long: str, short: str, value: str) -> dict:
    severity, factor = WINDOWS[(long, short)]
    return fired({**EP, "severity": severity, "team": "sre", "long_window": long, "short_window": short},
                 f"payments POST {PIX}: {value} of the calls that count failed over the last {long} "
                 f"(and over {short}), {factor}x the rate the 99.5% objective allows.",
                 AVAIL_SUMMARY, "OfsreAvailabilityBudgetBurn",
                 "ofsre-overview/ofsre-overview?viewPanel=1&var-namespace=ofsre")


def latency_burn(long: str, short: str, value: str) -> dict:
    severity, factor = WINDOWS[(long, short)]
    return fired({**EP, "severity": severity, "team": "sre", "long_window": long, "short_window": short},
                 f"payments POST {PIX} (tier alta): {value} of the calls took longer than the tier's limit "
                 f"over the last {long} (and over {short}), {factor}x the rate the 95% objective allows.",
                 LAT_SUMMARY, "OfsreLatencyBudgetBurn",
                 "ofsre-compliance/ofsre-compliance?viewPanel=5&var-namespace=ofsre")


ALL_WINDOWS = list(WINDOWS)
AVAILABILITY = [
    # 1 error in 11 counted calls (9.09 %): above every threshold (7.2 %, 3 %, 1.5 %, 0.5 %).
    test("availability: 9 % errors burns every window",
         [http("201", 10), http("500", 1)],
         [expect("OfsreAvailabilityBudgetBurn", "65m",
                 *(avail_burn(lg, sh, "9.091%") for lg, sh in ALL_WINDOWS))]),
    # 1 in 15 (6.67 %): below 14.4 × 0.5 % = 7.2 %, so the 1h/5m page stays quiet; the others fire.
    test("availability: 6.7 % errors is under the 14.4x boundary",
         [http("201", 14), http("500", 1)],
         [expect("OfsreAvailabilityBudgetBurn", "65m",
                 *(avail_burn(lg, sh, "6.667%") for lg, sh in ALL_WINDOWS[1:]))]),
    # 1 in 50 (2 %): under 6x (3 %) too; only the ticket windows fire.
    test("availability: 2 % errors is under the 6x boundary",
         [http("201", 49), http("500", 1)],
         [expect("OfsreAvailabilityBudgetBurn", "65m",
                 *(avail_burn(lg, sh, "2%") for lg, sh in ALL_WINDOWS[2:]))]),
    # 408 is an error, 422 a success, 429 does not count at all: 1 error in 4 counted calls.
    test("availability: 408 counts as an error, 422 as a success, 429 not at all",
         [http("201", 2), http("422", 1), http("408", 1), http("429", 50)],
         [expect("OfsreAvailabilityBudgetBurn", "65m",
                 *(avail_burn(lg, sh, "25%") for lg, sh in ALL_WINDOWS))]),
    # Half the calls fail but there are only ~65 in the hour: the minimum-traffic guard (100) holds.
    test("availability: a handful of calls cannot page (minimum-traffic guard)",
         [http("201", 0.125), http("500", 0.125)],
         [expect("OfsreAvailabilityBudgetBurn", "65m")]),
    test("availability: no errors, no alert",
         [http("201", 10)],
         [expect("OfsreAvailabilityBudgetBurn", "65m")]),
]

FAST = {"0.5": 0, "1.5": 0, "2.5": 0, "+Inf": 0}
LATENCY = [
    # 8 of 10 calls over the 1.5 s alta limit: 80 % > 72 % (14.4 × 5 %).
    test("latency: 80 % slow burns every window; p95 above the tier limit",
         [http("201", 10), *buckets("201", {"0.5": 1, "1.5": 2, "2.5": 10, "+Inf": 10})],
         [expect("OfsreLatencyBudgetBurn", "65m", *(latency_burn(lg, sh, "80%") for lg, sh in ALL_WINDOWS)),
          expect("OfsreLatencyP95AboveTierLimit", "5m"),   # `for: 10m` has not passed yet
          expect("OfsreLatencyP95AboveTierLimit", "20m", fired(
              {**EP, "severity": "warning", "team": "sre"},
              f"payments POST {PIX} (tier alta): p95 over 5 minutes is 2.438s, above the tier's limit.",
              "An endpoint's p95 latency is above its regulatory tier limit.",
              "OfsreLatencyP95AboveTierLimit",
              "ofsre-compliance/ofsre-compliance?viewPanel=1&var-namespace=ofsre"))]),
    # 1 in 10 slow (10 %): under 14.4x, 6x (30 %) and 3x (15 %); only 3d/6h (5 %) fires. With more than
    # 5 % slow the p95 is over the limit too (rank 9.5 of 10 falls in the 1.5–2.5 s bucket).
    test("latency: 10 % slow fires only the 1x window",
         [*buckets("201", {"0.5": 5, "1.5": 9, "2.5": 10, "+Inf": 10})],
         [expect("OfsreLatencyBudgetBurn", "65m", latency_burn("3d", "6h", "10%")),
          expect("OfsreLatencyP95AboveTierLimit", "30m", fired(
              {**EP, "severity": "warning", "team": "sre"},
              f"payments POST {PIX} (tier alta): p95 over 5 minutes is 2s, above the tier's limit.",
              "An endpoint's p95 latency is above its regulatory tier limit.",
              "OfsreLatencyP95AboveTierLimit",
              "ofsre-compliance/ofsre-compliance?viewPanel=1&var-namespace=ofsre"))]),
    # 4 % slow: within the 5 % budget, no burn at all; p95 (rank 9.5 of 10 within 1.5 s) under the limit.
    test("latency: 4 % slow burns nothing",
         [*buckets("201", {"0.5": 10, "1.5": 24, "2.5": 25, "+Inf": 25})],
         [expect("OfsreLatencyBudgetBurn", "65m"), expect("OfsreLatencyP95AboveTierLimit", "30m")]),
    # 429s are left out of latency (governance excludes them): slow 429s burn nothing.
    test("latency: slow 429 answers do not count",
         [*buckets("429", {"0.5": 0, "1.5": 0, "2.5": 10, "+Inf": 10}), *buckets("201", {**FAST, "0.5": 5,
                                                                                     "1.5": 5, "2.5": 5,
                                                                                     "+Inf": 5})],
         [expect("OfsreLatencyBudgetBurn", "65m"), expect("OfsreLatencyP95AboveTierLimit", "30m")]),
    test("latency: a handful of slow calls cannot page (minimum-traffic guard)",
         [*buckets("201", {"0.5": 0, "1.5": 0, "2.5": 0.125, "+Inf": 0.125})],
         [expect("OfsreLatencyBudgetBurn", "65m")]),
]

MINUTE_SUMMARY = "An endpoint had minutes that count as unavailable for the regulator."
MINUTE = [
    test("minute: half the calls fail",
         [http("201", 1), http("503", 1)],
         [expect("OfsreEndpointMinuteUnavailable", "2m"),  # `for: 2m` not yet
          expect("OfsreEndpointMinuteUnavailable", "5m", fired(
              {**EP, "severity": "warning", "team": "sre"},
              f"payments POST {PIX}: only 50% of the calls that count succeeded in the last minute "
              f"(a minute is available at 95%).", MINUTE_SUMMARY, "OfsreEndpointMinuteUnavailable",
              "ofsre-compliance/ofsre-compliance?viewPanel=2&var-namespace=ofsre"))]),
    # Errors stop at 10 minutes: the alert keeps firing 5 more minutes (keep_firing_for), then resolves.
    test("minute: keeps firing for 5 minutes after the minutes recover",
         [http("201", 1), series("ofsre_http_server_requests_total", {**EP, **SCRAPE, "status": "503"},
                                 "0+1x40 40x240")],
         [expect("OfsreEndpointMinuteUnavailable", "14m", fired(
             {**EP, "severity": "warning", "team": "sre"},
             f"payments POST {PIX}: only 50% of the calls that count succeeded in the last minute "
             f"(a minute is available at 95%).", MINUTE_SUMMARY, "OfsreEndpointMinuteUnavailable",
             "ofsre-compliance/ofsre-compliance?viewPanel=2&var-namespace=ofsre")),
          expect("OfsreEndpointMinuteUnavailable", "20m")]),
    test("minute: exactly 95 % succeeded is an available minute",
         [http("201", 19), http("500", 1)],
         [expect("OfsreEndpointMinuteUnavailable", "10m")]),
    test("minute: routes outside the catalog do not count",
         [http("500", 1, {**EP, "route": "__unknown__", "api": "", "tier": ""})],
         [expect("OfsreEndpointMinuteUnavailable", "10m")]),
]

GATEWAY = {"namespace": "ofsre", "service": "gateway", "route": PIX, "method": "POST", "api": "payments",
           "tier": "alta"}
HTTP_CAUSES = [
    test("529 answered",
         [http("529", 1, GATEWAY), http("201", 10, GATEWAY)],
         [expect("OfsreCapacityExceeded", "10m", fired(
             {"namespace": "ofsre", "service": "gateway", "severity": "warning", "team": "sre"},
             "gateway answered 0.07 calls/s with 529 over the last 5 minutes (the ecosystem expects at "
             "least 300 TPS).",
             "The platform answers 529: calls beyond its global capacity are refused.",
             "OfsreCapacityExceeded", "ofsre-compliance/ofsre-compliance?viewPanel=3&var-namespace=ofsre")),
          expect("OfsreTPMLimitBurst", "10m")]),
    test("no 529, no capacity alert; a few 429s are no burst",
         [http("201", 10, GATEWAY), http("429", 0.5, GATEWAY)],
         [expect("OfsreCapacityExceeded", "10m"), expect("OfsreTPMLimitBurst", "10m")]),
    test("429 burst",
         [http("429", 10, GATEWAY)],
         [expect("OfsreTPMLimitBurst", "10m", fired(
             {"namespace": "ofsre", "service": "gateway", "route": PIX, "method": "POST", "severity": "info",
              "team": "sre"},
             f"gateway POST {PIX} answered 200 calls with 429 in the last 5 minutes.",
             "Clients are being refused with 429 for exceeding their TPM limit.", "OfsreTPMLimitBurst",
             "ofsre-compliance/ofsre-compliance?viewPanel=4&var-namespace=ofsre"))]),
]

HPA = {**KSM, "horizontalpodautoscaler": "payments"}
AUTOSCALING_URL = "ofsre-autoscaling/ofsre-autoscaling?viewPanel={}&var-namespace=ofsre"


def hpa_series(current: float, desired: float, maximum: float, scaling_active_false: float) -> list[dict]:
    return [
        series("kube_horizontalpodautoscaler_status_current_replicas", HPA, flat(current)),
        series("kube_horizontalpodautoscaler_status_desired_replicas", HPA, flat(desired)),
        series("kube_horizontalpodautoscaler_spec_max_replicas", HPA, flat(maximum)),
        series("kube_horizontalpodautoscaler_status_condition",
               {**HPA, "condition": "ScalingActive", "status": "false"}, flat(scaling_active_false)),
    ]


AUTOSCALING = [
    test("HPA at max, scaling inactive, replicas unavailable",
         [*hpa_series(4, 4, 4, 1),
          series("kube_deployment_status_replicas_available", {**KSM, "deployment": "payments"}, flat(2)),
          series("kube_deployment_status_replicas_available", {**KSM, "deployment": "gateway"}, flat(0))],
         [expect("OfsreHPAAtMaxReplicas", "10m"),  # `for: 15m`
          expect("OfsreHPAAtMaxReplicas", "20m", fired(
              {**HPA, "severity": "warning", "team": "sre"},
              "HPA ofsre/payments has run at its maximum of 4 replicas for 15 minutes; it cannot add "
              "capacity.",
              "An autoscaler has been running at its maximum replicas.", "OfsreHPAAtMaxReplicas",
              AUTOSCALING_URL.format(1))),
          expect("OfsreHPAScalingInactive", "20m", fired(
              {**HPA, "condition": "ScalingActive", "status": "false", "severity": "warning", "team": "sre"},
              "HPA ofsre/payments reports ScalingActive=false: it cannot read its metrics and does not "
              "scale.",
              "An autoscaler cannot compute its desired replicas (ScalingActive is false).",
              "OfsreHPAScalingInactive", AUTOSCALING_URL.format(2))),
          expect("OfsreReplicasUnavailable", "20m", *(fired(
              {**labels, "severity": "warning", "team": "sre"},
              f"Deployment ofsre/{dep} has had fewer available replicas than needed for 10 minutes "
              f"(value {value}: the replicas its autoscaler wants, 0 if none is available).",
              "A deployment has fewer available replicas than it needs.", "OfsreReplicasUnavailable",
              AUTOSCALING_URL.format(1)) for dep, value, labels in (
                  ("payments", 4, {**HPA, "deployment": "payments"}),
                  ("gateway", 0, {**KSM, "deployment": "gateway"}))))]),
    # An autoscaled deployment with none available alerts once (from the HPA branch), not twice.
    test("replicas unavailable: no duplicate for an autoscaled deployment with none available",
         [*hpa_series(2, 2, 4, 0),
          series("kube_deployment_status_replicas_available", {**KSM, "deployment": "payments"}, flat(0))],
         [expect("OfsreReplicasUnavailable", "20m", fired(
             {**HPA, "deployment": "payments", "severity": "warning", "team": "sre"},
             "Deployment ofsre/payments has had fewer available replicas than needed for 10 minutes "
             "(value 2: the replicas its autoscaler wants, 0 if none is available).",
             "A deployment has fewer available replicas than it needs.", "OfsreReplicasUnavailable",
             AUTOSCALING_URL.format(1)))]),
    test("HPA below max, scaling active, every replica available",
         [*hpa_series(3, 3, 4, 0),
          series("kube_deployment_status_replicas_available", {**KSM, "deployment": "payments"}, flat(3)),
          series("kube_deployment_status_replicas_available", {**KSM, "deployment": "gateway"}, flat(1))],
         [expect("OfsreHPAAtMaxReplicas", "30m"), expect("OfsreHPAScalingInactive", "30m"),
          expect("OfsreReplicasUnavailable", "30m")]),
]

WORKER = {"namespace": "ofsre", "service": "worker", "queue": "pix-payments", "backend": "db"}
WSCRAPE = {"job": "worker", "pod": "worker-1", "instance": "127.0.0.1:9005"}
QUEUES_URL = "ofsre-queues/ofsre-queues?viewPanel={}&var-namespace=ofsre"


def queue_latency(steps: dict[str, float]) -> list[dict]:
    return [series("ofsre_queue_publish_to_consume_seconds_bucket", {**WORKER, **WSCRAPE, "le": le},
                   counter(s))
            for le, s in steps.items()]


def queue(name: str, values: str, **extra: str) -> dict:
    return series(name, {**WORKER, **WSCRAPE, **extra}, values)


QUEUE_LABELS = {"namespace": "ofsre", "service": "worker", "queue": "pix-payments", "severity": "warning",
                "team": "sre"}
QUEUES = [
    test("queue latency, failures and dead letters",
         [*queue_latency({"1.0": 0, "30.0": 0, "60.0": 10, "+Inf": 10}),
          queue("ofsre_queue_messages_consumed_total", counter(10)),
          queue("ofsre_queue_messages_failed_total", counter(1), outcome="retry"),
          queue("ofsre_queue_messages_failed_total", "0x20 1x260", outcome="dead_letter")],
         [expect("OfsreQueueLatencyHigh", "30m", fired(
             QUEUE_LABELS,
             "Queue pix-payments (worker): p95 publish-to-consume latency is 58.5s over 10 minutes.",
             "Messages wait too long between publish and processing.", "OfsreQueueLatencyHigh",
             QUEUES_URL.format(1))),
          expect("OfsreQueueFailuresHigh", "30m", fired(
              QUEUE_LABELS,
              "Queue pix-payments (worker): 9.091% of the messages handled in the last 10 minutes failed.",
              "A growing share of queue messages fails to process.", "OfsreQueueFailuresHigh",
              QUEUES_URL.format(2))),
          expect("OfsreQueueDeadLetters", "8m", fired(
              QUEUE_LABELS,
              "Queue pix-payments (worker): 1 messages dead-lettered in the last 10 minutes; they will "
              "not be retried.",
              "Messages were moved to the dead-letter queue.", "OfsreQueueDeadLetters",
              QUEUES_URL.format(2))),
          expect("OfsreQueueDeadLetters", "30m")]),  # the dead letter is older than 10 minutes
    test("a healthy queue",
         [*queue_latency({"1.0": 10, "30.0": 10, "60.0": 10, "+Inf": 10}),
          queue("ofsre_queue_messages_consumed_total", counter(10)),
          queue("ofsre_queue_messages_failed_total", counter(0.1), outcome="retry"),
          queue("ofsre_queue_messages_failed_total", flat(0), outcome="dead_letter")],
         [expect("OfsreQueueLatencyHigh", "30m"), expect("OfsreQueueFailuresHigh", "30m"),
          expect("OfsreQueueDeadLetters", "30m")]),
]

TELEMETRY_URL = "ofsre-telemetry/ofsre-telemetry?viewPanel={}&var-namespace=ofsre"
PAY = {"namespace": "ofsre", **SCRAPE}
TELEMETRY = [
    test("a shipper drops records, telemetry errors, a target down",
         [series("ofsre_log_records_dropped_total", {**PAY, "backend": "loki", "reason": "queue_full"},
                 "0x20 5x260"),
          series("ofsre_telemetry_errors_total", {**PAY, "component": "tracing"}, "0x20 3x260"),
          series("up", PAY, "1x20 0x260"),
          series("up", {"job": "kube-state-metrics", "instance": "127.0.0.1:9100"}, flat(1))],
         [expect("OfsreLogShipperDropping", "8m", fired(
             {"namespace": "ofsre", "job": "payments", "backend": "loki", "reason": "queue_full",
              "severity": "warning", "team": "sre"},
             "payments: the loki shipper dropped 5 records (queue_full) in the last 10 minutes.",
             "A log shipper is dropping log records.", "OfsreLogShipperDropping", TELEMETRY_URL.format(1))),
          expect("OfsreTelemetryErrors", "8m", fired(
              {"namespace": "ofsre", "job": "payments", "component": "tracing", "severity": "info",
               "team": "sre"},
              "payments: 3 telemetry errors in tracing in the last 10 minutes.",
              "Telemetry code swallowed errors (the application was not affected).", "OfsreTelemetryErrors",
              TELEMETRY_URL.format(2))),
          expect("OfsreScrapeTargetDown", "7m"),  # down for 2 minutes: `for: 5m` not yet
          expect("OfsreScrapeTargetDown", "12m", fired(
              {**PAY, "severity": "warning", "team": "sre"},
              "payments target 127.0.0.1:9001 has been down for 5 minutes.",
              "Prometheus cannot scrape a target: its metrics and alerts are blind.", "OfsreScrapeTargetDown",
              TELEMETRY_URL.format(3)))]),
    test("healthy telemetry",
         [series("ofsre_log_records_dropped_total", {**PAY, "backend": "loki", "reason": "queue_full"},
                 flat(5)),
          series("ofsre_telemetry_errors_total", {**PAY, "component": "tracing"}, flat(3)),
          series("up", PAY, flat(1)),
          series("up", {"job": "kube-state-metrics", "instance": "127.0.0.1:9100"}, flat(1))],
         [expect("OfsreLogShipperDropping", "30m"), expect("OfsreTelemetryErrors", "30m"),
          expect("OfsreScrapeTargetDown", "30m")]),
]

PCM_URL = "ofsre-compliance/ofsre-compliance?viewPanel={}&var-namespace=ofsre"
SENDER = {"namespace": "ofsre", "job": "pcm-sender", "instance": "127.0.0.1:9300"}
EDGE = {"namespace": "ofsre", "job": "gateway", "pod": "gateway-1", "instance": "127.0.0.1:9000",
        "service": "gateway"}
PCM = [
    test("PCM reports late, held and dropped",
         [series("ofsre_pcm_deadline_seconds_left", SENDER, flat(5400)),      # 1 h 30 left, reports waiting
          series("ofsre_pcm_backlog_reports", {**SENDER, "kind": "private"}, flat(12)),
          series("ofsre_pcm_held_reports", SENDER, "0x4 3x276"),
          series("ofsre_pcm_reports_dropped_total", {**EDGE, "reason": "queue_full"}, "0x20 5x260")],
         [expect("OfsrePcmDeadlineAtRisk", "8m", fired(
             {"namespace": "ofsre", "severity": "critical", "team": "sre"},
             "1h 30m 0s left before the deadline of the oldest undelivered PCM report, and reports are "
             "still waiting (ofsre pcm status).",
             "PCM reports may miss their 08:00 (Brasília) delivery deadline.", "OfsrePcmDeadlineAtRisk",
             PCM_URL.format(6))),
          expect("OfsrePcmReportsHeld", "3m"),  # held for 2 minutes: `for: 5m` not yet
          expect("OfsrePcmReportsHeld", "8m", fired(
              {"namespace": "ofsre", "severity": "warning", "team": "sre"},
              "3 PCM reports are held after a 400/401/403/406/415 (ofsre pcm results --status HELD); fix "
              "the cause, then ofsre pcm requeue.",
              "The PCM refused a batch of reports for good; they are held.", "OfsrePcmReportsHeld",
              PCM_URL.format(7))),
          expect("OfsrePcmReportsDropped", "8m", fired(
              {"namespace": "ofsre", "job": "gateway", "reason": "queue_full", "severity": "critical",
               "team": "sre"},
              "gateway dropped 5 PCM reports (queue_full) in the last 10 minutes: the regulator will not "
              "receive them.",
              "PCM reports were lost before reaching the local store.", "OfsrePcmReportsDropped",
              PCM_URL.format(8)))]),
    test("PCM reports on time: close to the deadline with nothing waiting",
         [series("ofsre_pcm_deadline_seconds_left", SENDER, flat(5400)),
          series("ofsre_pcm_backlog_reports", {**SENDER, "kind": "private"}, flat(0)),
          series("ofsre_pcm_held_reports", SENDER, flat(0)),
          series("ofsre_pcm_reports_dropped_total", {**EDGE, "reason": "queue_full"}, flat(5))],
         [expect("OfsrePcmDeadlineAtRisk", "30m"), expect("OfsrePcmReportsHeld", "30m"),
          expect("OfsrePcmReportsDropped", "30m")]),
    test("PCM reports on time: a backlog with hours to go",
         [series("ofsre_pcm_deadline_seconds_left", SENDER, flat(20000)),
          series("ofsre_pcm_backlog_reports", {**SENDER, "kind": "private"}, flat(12)),
          series("ofsre_pcm_held_reports", SENDER, flat(0))],
         [expect("OfsrePcmDeadlineAtRisk", "30m")]),
]

TESTS = AVAILABILITY + LATENCY + MINUTE + HTTP_CAUSES + AUTOSCALING + QUEUES + TELEMETRY + PCM


def suite(rule_files: list[str]) -> dict:
    return {"rule_files": rule_files, "evaluation_interval": "1m", "tests": TESTS}
