"""Autoscaling: current/desired/min/max replicas against CPU and memory utilisation (usage ÷
request, as the HPA computes it) and request rate, time spent at max, and the HPA conditions
(ScalingLimited periods, ScalingActive, AbleToScale). Reads kube-state-metrics' series, which the
local runtime exposes under the same names."""

from __future__ import annotations

from ofsre.alerts.config import MonitoringConfig
from ofsre.instrumentation import semconv as sc

from ._lib import Board, q, stat, ts
from .service import cpu_per_pod, memory_per_pod, requests_per_pod

KEY = "autoscaling"


def build(cfg: MonitoringConfig) -> dict:
    b = Board(KEY, cfg, variables=("namespace", "service"))
    ksm = cfg.selector(cfg.kube_state_metrics_selector, 'namespace=~"$namespace"')
    hpa = f'{ksm}, horizontalpodautoscaler=~"{b.workload()}"'
    current, maximum = sc.KUBE_HPA_CURRENT_REPLICAS.name, sc.KUBE_HPA_MAX_REPLICAS.name
    target = sc.KUBE_HPA_TARGET_METRIC.name
    b.add(
        ts("Replicas: current, desired, min, max",
           [q(f"{current}{{{hpa}}}", "current {{horizontalpodautoscaler}}"),
            q(f"{sc.KUBE_HPA_DESIRED_REPLICAS.name}{{{hpa}}}", "desired {{horizontalpodautoscaler}}"),
            q(f"{sc.KUBE_HPA_MIN_REPLICAS.name}{{{hpa}}}", "min {{horizontalpodautoscaler}}"),
            q(f"{maximum}{{{hpa}}}", "max {{horizontalpodautoscaler}}")], "short", key="replicas", width=12,
           step=True),
        ts("Request rate", [q(f"sum by (service) ({b.rate(sc.HTTP_REQUESTS.series)})", "{{service}}")],
           "reqps", width=12),
        ts("CPU utilisation (usage ÷ request) against the HPA target",
           [q(f"sum({cpu_per_pod(b)})\n/ sum({requests_per_pod(b, 'cpu')})", "utilisation"),
            q(f'{target}{{{hpa}, metric_name="cpu", metric_target_type="utilization"}} / 100',
              "target {{horizontalpodautoscaler}}")], "percentunit", width=12),
        ts("Memory utilisation (usage ÷ request) against the HPA target",
           [q(f"sum({memory_per_pod(b)})\n/ sum({requests_per_pod(b, 'memory')})", "utilisation"),
            q(f'{target}{{{hpa}, metric_name="memory", metric_target_type="utilization"}} / 100',
              "target {{horizontalpodautoscaler}}")], "percentunit", width=12),
        # Sampled every 15 s (a 1m step would miss a range shorter than the minute's alignment).
        stat("Time at max replicas",
             [q(f"sum by (horizontalpodautoscaler) (sum_over_time(({current}{{{hpa}}} >= bool "
                f"{maximum}{{{hpa}}})[$__range:15s])) * 15", "{{horizontalpodautoscaler}}")],
             "s", width=6, thresholds=[("green", None), ("orange", 900.0)]),
        ts("HPA conditions (1 = true)",
           [q(f'{sc.KUBE_HPA_CONDITION.name}{{{hpa}, condition=~"ScalingLimited|ScalingActive|AbleToScale", '
              f'status="true"}}', "{{horizontalpodautoscaler}} {{condition}}")], "bool_yes_no",
              key="conditions",
           width=18, step=True,
           description="ScalingLimited true: the desired count hit min/max or a rate policy; "
                       "ScalingActive false: no metrics, the HPA does not scale."),
    )
    return b.dashboard()
