"""Service (templated by service): RED per route, in-flight, request/response sizes, CPU and memory
per replica (cAdvisor where it exists, the process' own metrics otherwise) against the requests
kube-state-metrics reports, and replicas."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv as sc

from ._lib import Board, q, ts

KEY = "service"


def cpu_per_pod(b: Board) -> str:
    """CPU cores per replica: cAdvisor's container series on a cluster, ``process_cpu_seconds_total``
    locally."""
    cad = b.cfg.selector(b.cfg.cadvisor_selector, 'namespace=~"$namespace"', f'pod=~"{b.pods()}"',
                         'container!=""', 'container!="POD"')
    proc = b.ns(f'job=~"{b.workload()}"')
    return (f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{cad}}}[$__rate_interval]))\n"
            f"or sum by (pod) (rate(process_cpu_seconds_total{{{proc}}}[$__rate_interval]))")


def memory_per_pod(b: Board) -> str:
    cad = b.cfg.selector(b.cfg.cadvisor_selector, 'namespace=~"$namespace"', f'pod=~"{b.pods()}"',
                         'container!=""', 'container!="POD"')
    proc = b.ns(f'job=~"{b.workload()}"')
    return (f"sum by (pod) (container_memory_working_set_bytes{{{cad}}})\n"
            f"or sum by (pod) (process_resident_memory_bytes{{{proc}}})")


def requests_per_pod(b: Board, resource: str) -> str:
    sel = b.cfg.selector(b.cfg.kube_state_metrics_selector, 'namespace=~"$namespace"', f'pod=~"{b.pods()}"',
                         f'resource="{resource}"')
    return f"sum by (pod) ({sc.KUBE_POD_RESOURCE_REQUESTS.name}{{{sel}}})"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "service"),
              description="One service in depth; pick it with the service variable.")
    req, dur = sc.HTTP_REQUESTS.series, sc.HTTP_DURATION.name + "_bucket"
    ksm = cfg.selector(cfg.kube_state_metrics_selector, 'namespace=~"$namespace"')
    b.add(
        ts("Request rate by route", [q(f"sum by (service, method, route) ({b.rate(req)})",
                                       "{{service}} {{method}} {{route}}")], "reqps", width=8),
        ts("Errors by route and status (4xx and 5xx)",
           [q(f'sum by (service, route, status) ({b.rate(req, "status=~" + chr(34) + "4..|5.." + chr(34))})',
              "{{service}} {{route}} {{status}}")], "reqps", width=8),
        ts("p95 latency by route",
           [q(f"histogram_quantile(0.95, sum by (service, route, le) ({b.rate(dur)}))",
              "{{service}} {{route}}")],
           "s", width=8),
        ts("Requests in flight", [q(f"sum by (service, route) ({sc.HTTP_IN_FLIGHT.name}{{{b.sel()}}})",
                                    "{{service}} {{route}}")], "short", width=8),
        ts("Request size p95", [q(f"histogram_quantile(0.95, sum by (service, le) "
                                  f"({b.rate(sc.HTTP_REQUEST_SIZE.name + '_bucket')}))", "{{service}}")],
           "bytes", width=8),
        ts("Response size p95", [q(f"histogram_quantile(0.95, sum by (service, le) "
                                   f"({b.rate(sc.HTTP_RESPONSE_SIZE.name + '_bucket')}))", "{{service}}")],
           "bytes", width=8),
        ts("CPU per replica", [q(cpu_per_pod(b), "{{pod}}")], "short", axis_label="cores", width=6),
        ts("CPU per replica, share of its request",
           [q(f"({cpu_per_pod(b)})\n/ on (pod) {requests_per_pod(b, 'cpu')}", "{{pod}}")], "percentunit",
           width=6),
        ts("Memory per replica", [q(memory_per_pod(b), "{{pod}}")], "bytes", width=6),
        ts("Memory per replica, share of its request",
           [q(f"({memory_per_pod(b)})\n/ on (pod) {requests_per_pod(b, 'memory')}", "{{pod}}")],
           "percentunit", width=6),
        ts("Replicas",
           [q(f'{sc.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE.name}{{{ksm}, deployment=~"{b.workload()}"}}',
              "available {{deployment}}"),
            q(f'{sc.KUBE_HPA_DESIRED_REPLICAS.name}{{{ksm}, horizontalpodautoscaler=~"{b.workload()}"}}',
              "desired {{horizontalpodautoscaler}}")], "short", width=24, step=True),
    )
    return b.dashboard()
