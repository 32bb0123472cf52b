"""The local runtime's two kube-state-metrics series the utilisation panels and rules need.

``kube_pod_container_resource_requests{resource,unit}`` per replica and
``kube_horizontalpodautoscaler_spec_target_metric{metric_name,metric_target_type}``, with
kube-state-metrics' names and labels, read from the runtime's real ``/metrics`` while real
stand-in replica processes run (tests/platform/runtime/standin_service.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ofsre.instrumentation import semconv
from ofsre.platform.runtime import LocalRuntime, RuntimeConfig, ServiceConfig
from ofsre.platform.runtime.config import MIB
from ofsre.platform.runtime.hpa import ControllerConfig

STANDIN = Path(__file__).resolve().parents[1] / "platform" / "runtime" / "standin_service.py"


def _samples(url: str, name: str) -> list[dict]:
    text = httpx.get(url).text
    return [dict(s.labels, value=s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name]


def test_runtime_exposes_requests_per_replica_and_hpa_targets(tmp_path):
    cfg = RuntimeConfig(
        data_dir=tmp_path, gateway_port=0, migrate_command=None,
        command=(sys.executable, str(STANDIN), "{service}", "--host", "{host}", "--port", "{port}"),
        services=(ServiceConfig("consents", replicas=2, max_replicas=3, cpu_request=0.1,
                                memory_request_mib=64, cpu_target=50, memory_target=70),),
        controller=ControllerConfig(sync_period=1.0), deregistration_delay=0.2, termination_grace=5.0)
    rt = LocalRuntime(cfg)
    rt.start()
    try:
        url = rt.endpoints()["runtime_metrics"]
        requests = _samples(url, semconv.KUBE_POD_RESOURCE_REQUESTS.name)
        pods = {r.name for r in rt.deployments["consents"].replicas()}
        got = {(s["pod"], s["resource"],
                s["unit"]): s["value"] for s in requests if s["container"] == "consents"}
        assert got == {**{(p, "cpu", "core"): 0.1 for p in pods},
                       **{(p, "memory", "byte"): float(64 * MIB) for p in pods}}
        assert all(s["namespace"] == "ofsre" and s["node"] and s["uid"] for s in requests)
        assert {s["pod"] for s in requests if s["container"] == "gateway"}  # every deployment is reported
        targets = _samples(url, semconv.KUBE_HPA_TARGET_METRIC.name)
        assert {(s["metric_name"], s["metric_target_type"]): s["value"]
                for s in targets if s["horizontalpodautoscaler"] == "consents"} == {("cpu",
                                                                                     "utilization"): 50.0,
                                                                                    ("memory",
                                                                                     "utilization"): 70.0}
        # A replica that goes away takes its series with it.
        rt.deployments["consents"].scale(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rt.autoscaler.publish()
            left = {s["pod"] for s in _samples(url, semconv.KUBE_POD_RESOURCE_REQUESTS.name)
                    if s["container"] == "consents"}
            if len(left) == 1:
                break
            time.sleep(0.2)
        assert len(left) == 1 and left < pods
    finally:
        rt.stop()
