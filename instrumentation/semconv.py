"""Every metric name, label set and bucket list ofsre emits, defined once.

The middleware, the queue and database helpers, the log shippers and the local
autoscaler create their metrics from these specs; dashboards and alert rules import
the same constants, and a test scrapes running services to check every name used
by a panel or a rule exists. Never retype a metric name elsewhere.

Names follow Prometheus conventions: ``ofsre_`` prefix, base units (seconds, bytes),
counters declared without ``_total`` (prometheus_client appends it; use
``MetricSpec.series`` for the exposed sample name).

Latency histograms (``catalog_buckets=True``) take their buckets from the endpoint catalog
in use when the metric is created (``MetricSpec.histogram_buckets(catalog)``, what
:func:`~ofsre.instrumentation.metrics.metric` passes on), so every tier's p95 limit of
that catalog is a bucket bound; nothing here reads the catalog at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = [
    "MetricSpec", "UNKNOWN_ROUTE", "OTHER_METHOD", "NO_API", "KNOWN_METHODS",
    "HTTP_REQUESTS", "HTTP_DURATION", "HTTP_IN_FLIGHT", "HTTP_REQUEST_SIZE", "HTTP_RESPONSE_SIZE",
    "BUILD_INFO", "TELEMETRY_ERRORS",
    "QUEUE_PUBLISHED", "QUEUE_CONSUMED", "QUEUE_FAILED", "QUEUE_PROCESSING_DURATION", "QUEUE_LATENCY",
    "DB_QUERY_DURATION", "DB_POOL_IN_USE", "DB_POOL_SIZE",
    "LOG_RECORDS_SHIPPED", "LOG_RECORDS_DROPPED", "LOG_RECORDS_RETRIED", "LOG_BATCHES",
    "LOG_QUEUE_DEPTH", "LOG_SEND_DURATION",
    "KUBE_HPA_CURRENT_REPLICAS", "KUBE_HPA_DESIRED_REPLICAS", "KUBE_HPA_MIN_REPLICAS",
    "KUBE_HPA_MAX_REPLICAS", "KUBE_HPA_CONDITION", "KUBE_DEPLOYMENT_REPLICAS_AVAILABLE",
    "KUBE_HPA_TARGET_METRIC", "KUBE_POD_RESOURCE_REQUESTS", "ALL",
]

UNKNOWN_ROUTE = "__unknown__"  # every path no route template matches
OTHER_METHOD = "_OTHER"         # every method outside KNOWN_METHODS (OpenTelemetry's convention)
NO_API = ""                      # api/tier label value for routes outside the Open Finance catalog
# The HTTP methods of RFC 9110 (+ PATCH): metric labels, span names, and the catalog's valid methods.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


# prometheus_client's gauge modes under PROMETHEUS_MULTIPROC_DIR.
MultiprocessMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                           "mostrecent", "livemostrecent"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    doc: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] | None = None
    multiprocess_mode: MultiprocessMode = "all"  # for gauges under PROMETHEUS_MULTIPROC_DIR
    # Latency histograms: the catalog's regulatory buckets plus ``buckets`` (see histogram_buckets).
    catalog_buckets: bool = False

    @property
    def series(self) -> str:
        """The sample name as scraped: counters gain ``_total``, histograms are
        ``_bucket``/``_sum``/``_count``."""
        return self.name + "_total" if self.kind == "counter" else self.name

    def histogram_buckets(self, catalog: Catalog | None = None) -> tuple[float, ...] | None:
        """The bucket bounds of a histogram built from this spec (``None``: prometheus_client's defaults).

        With ``catalog_buckets``, :func:`~ofsre.instrumentation.catalog.regulatory_buckets` of
        ``catalog`` (default: :func:`~ofsre.instrumentation.catalog.load_catalog`, read now) and
        this spec's own ``buckets``, in order.
        """
        if not self.catalog_buckets:
            return self.buckets
        from .catalog import regulatory_buckets  # the catalog imports this module's KNOWN_METHODS

        return tuple(sorted({*regulatory_buckets(catalog), *(self.buckets or ())}))


HTTP_LABELS = ("service", "route", "method", "status", "api", "tier")
SIZE_BUCKETS = (100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0)

HTTP_REQUESTS = MetricSpec("ofsre_http_server_requests", "counter",
                           "HTTP requests served, by route template and exact status code.", HTTP_LABELS)
HTTP_DURATION = MetricSpec("ofsre_http_server_request_duration_seconds", "histogram",
                           "Time from receiving the request to sending the last response byte.",
                           HTTP_LABELS, "seconds", catalog_buckets=True)
HTTP_IN_FLIGHT = MetricSpec("ofsre_http_server_requests_in_flight", "gauge",
                            "Requests being served now.", ("service", "route", "method", "api", "tier"),
                            multiprocess_mode="livesum")
HTTP_REQUEST_SIZE = MetricSpec("ofsre_http_server_request_size_bytes", "histogram",
                               "Request body size.", HTTP_LABELS, "bytes", SIZE_BUCKETS)
HTTP_RESPONSE_SIZE = MetricSpec("ofsre_http_server_response_size_bytes", "histogram",
                                "Response body size.", HTTP_LABELS, "bytes", SIZE_BUCKETS)
BUILD_INFO = MetricSpec("ofsre_build_info", "gauge", "Build of the running service; always 1.",
                        ("service", "version", "commit", "ofsre_version"), multiprocess_mode="max")
TELEMETRY_ERRORS = MetricSpec("ofsre_telemetry_errors", "counter",
                              "Errors inside telemetry code, swallowed so the app never sees them.",
                              ("component",))

QUEUE_LABELS = ("service", "queue", "backend")
QUEUE_PUBLISHED = MetricSpec("ofsre_queue_messages_published", "counter", "Messages published.", QUEUE_LABELS)
QUEUE_CONSUMED = MetricSpec("ofsre_queue_messages_consumed", "counter", "Messages consumed and acknowledged.",
                            QUEUE_LABELS)
QUEUE_FAILED = MetricSpec("ofsre_queue_messages_failed", "counter",
                          "Messages whose processing failed (nack, retry or dead letter).",
                          QUEUE_LABELS + ("outcome",))
QUEUE_PROCESSING_DURATION = MetricSpec("ofsre_queue_processing_duration_seconds", "histogram",
                                       "Time to process one consumed message.", QUEUE_LABELS, "seconds",
                                       catalog_buckets=True)
QUEUE_LATENCY = MetricSpec("ofsre_queue_publish_to_consume_seconds", "histogram",
                           "Time from publish to the start of processing.", QUEUE_LABELS, "seconds",
                           (30.0, 60.0, 300.0), catalog_buckets=True)

DB_QUERY_DURATION = MetricSpec("ofsre_db_query_duration_seconds", "histogram",
                               "Database statement duration by operation (SELECT, INSERT, …).",
                               ("service", "db", "operation"), "seconds",
                               (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
DB_POOL_IN_USE = MetricSpec("ofsre_db_pool_connections_in_use", "gauge", "Pool connections checked out.",
                            ("service", "db"), multiprocess_mode="livesum")
DB_POOL_SIZE = MetricSpec("ofsre_db_pool_connections", "gauge", "Pool size (connections open).",
                          ("service", "db"), multiprocess_mode="livesum")

SHIPPER_LABELS = ("backend",)
LOG_RECORDS_SHIPPED = MetricSpec("ofsre_log_records_shipped", "counter",
                                 "Log records accepted by the backend.", SHIPPER_LABELS)
LOG_RECORDS_DROPPED = MetricSpec("ofsre_log_records_dropped", "counter", "Log records dropped, by reason.",
                                 SHIPPER_LABELS + ("reason",))
LOG_RECORDS_RETRIED = MetricSpec("ofsre_log_records_retried", "counter",
                                 "Log records sent again after a failure.", SHIPPER_LABELS)
LOG_BATCHES = MetricSpec("ofsre_log_batches", "counter", "Batches sent, by outcome.",
                         SHIPPER_LABELS + ("outcome",))
LOG_QUEUE_DEPTH = MetricSpec("ofsre_log_queue_records", "gauge", "Records waiting in the shipper's buffer.",
                             SHIPPER_LABELS, multiprocess_mode="livesum")
LOG_SEND_DURATION = MetricSpec("ofsre_log_send_duration_seconds", "histogram",
                               "Duration of one batch request.",
                               SHIPPER_LABELS, "seconds",
                               (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

# The local autoscaler exposes its state with kube-state-metrics' own names and labels,
# so the same dashboards and alerts work locally and on a cluster.
KUBE_HPA_CURRENT_REPLICAS = MetricSpec("kube_horizontalpodautoscaler_status_current_replicas", "gauge",
                                       "Current number of replicas of pods managed by this autoscaler.",
                                       ("namespace", "horizontalpodautoscaler"))
KUBE_HPA_DESIRED_REPLICAS = MetricSpec("kube_horizontalpodautoscaler_status_desired_replicas", "gauge",
                                       "Desired number of replicas of pods managed by this autoscaler.",
                                       ("namespace", "horizontalpodautoscaler"))
KUBE_HPA_MIN_REPLICAS = MetricSpec("kube_horizontalpodautoscaler_spec_min_replicas", "gauge",
                                   "Lower limit for the number of pods that can be set by the autoscaler.",
                                   ("namespace", "horizontalpodautoscaler"))
KUBE_HPA_MAX_REPLICAS = MetricSpec("kube_horizontalpodautoscaler_spec_max_replicas", "gauge",
                                   "Upper limit for the number of pods that can be set by the autoscaler.",
                                   ("namespace", "horizontalpodautoscaler"))
KUBE_HPA_CONDITION = MetricSpec("kube_horizontalpodautoscaler_status_condition", "gauge",
                                "The condition of this autoscaler.",
                                ("namespace", "horizontalpodautoscaler", "condition", "status"))
KUBE_DEPLOYMENT_REPLICAS_AVAILABLE = MetricSpec("kube_deployment_status_replicas_available", "gauge",
                                                "The number of available replicas per deployment.",
                                                ("namespace", "deployment"))
KUBE_HPA_TARGET_METRIC = MetricSpec("kube_horizontalpodautoscaler_spec_target_metric", "gauge",
                                    "The metric specifications used by this autoscaler when calculating the "
                                    "desired replica count.",
                                    ("namespace", "horizontalpodautoscaler", "metric_name",
                                     "metric_target_type"))
KUBE_POD_RESOURCE_REQUESTS = MetricSpec("kube_pod_container_resource_requests", "gauge",
                                        "The number of requested request resource by a container. It is "
                                        "recommended to use the kube_pod_resource_requests metric exposed by "
                                        "kube-scheduler instead, as it is more precise.",
                                        ("namespace", "pod", "uid", "container", "node", "resource", "unit"))

# PCM regulatory reporting (ofsre.instrumentation.pcm captures, ofsre.exporters.pcm stores and sends).
# Capture side, in the capturing service:
PCM_DROP_REASONS = ("queue_full", "store_full", "store_error", "unencodable", "closed")
PCM_SKIP_REASONS = ("no_client_org", "no_server_org", "no_response")
PCM_REPORTS_CAPTURED = MetricSpec("ofsre_pcm_reports_captured", "counter",
                                  "PCM reports captured and written to the local store, by role.",
                                  ("service", "role"))
PCM_REPORTS_DROPPED = MetricSpec("ofsre_pcm_reports_dropped", "counter",
                                 "PCM reports lost before the store (overflow or store failure): alerted.",
                                 ("service", "reason"))
PCM_REPORTS_SKIPPED = MetricSpec("ofsre_pcm_reports_skipped", "counter",
                                 "Catalog calls deliberately not reported (no verified client "
                                 "org, no answer).",
                                 ("service", "reason"))
# Sender side, in the `ofsre pcm send` process (kind: private | opendata):
PCM_BATCH_OUTCOMES = ("ok", "partial", "split", "throttled", "server_error", "network_error", "unauthorized",
                      "rejected", "token_error", "unreadable")
PCM_REPORT_RESULTS = MetricSpec("ofsre_pcm_report_results", "counter",
                                "Per-report results stored from the PCM's answers "
                                "(ACCEPTED, DISCARDED, ...).",
                                ("kind", "status"))
PCM_BATCHES = MetricSpec("ofsre_pcm_batches", "counter", "Report requests to the PCM, by outcome.",
                         ("kind", "outcome"))
PCM_REPORTS_HELD = MetricSpec("ofsre_pcm_reports_held", "counter",
                              "Reports of batches the PCM refused for good "
                              "(400/401/403/406/415), kept: alerted.",
                              ("kind", "status"))
# Deadline (reports of a Brasília day are due by 08:00 the next day), computed from the store on scrape:
PCM_BACKLOG = MetricSpec("ofsre_pcm_backlog_reports", "gauge", "Reports in the store not yet delivered.",
                         ("kind",), multiprocess_mode="max")
PCM_HELD_REPORTS = MetricSpec("ofsre_pcm_held_reports", "gauge",
                              "Reports held after a refusal, waiting for a fix.", multiprocess_mode="max")
PCM_OLDEST_UNSENT_AGE = MetricSpec("ofsre_pcm_oldest_unsent_age_seconds", "gauge",
                                   "Age of the oldest report not yet delivered (0 when none).",
                                   unit="seconds", multiprocess_mode="max")
PCM_DEADLINE_SECONDS_LEFT = MetricSpec("ofsre_pcm_deadline_seconds_left", "gauge",
                                       "Seconds until the delivery deadline of the oldest "
                                       "undelivered report's day (today's when none); negative: missed.",
                                       unit="seconds", multiprocess_mode="min")
PCM_DAY_REPORTS = MetricSpec("ofsre_pcm_day_reports", "gauge",
                             "Today's (Brasília) reports by PCM result; PENDING and HELD not yet accepted.",
                             ("status",), multiprocess_mode="max")
PCM_LAST_DELIVERY = MetricSpec("ofsre_pcm_last_delivery_timestamp_seconds", "gauge",
                               "Unix time of the last delivery to the PCM.", unit="seconds",
                               multiprocess_mode="max")

ALL: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))
