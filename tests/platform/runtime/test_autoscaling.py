"""The autoscaler adds a replica process under CPU load and removes it after the window.

Real processes: the runtime starts a stand-in gateway and service (tests/platform/runtime/
standin_service.py), CPU load comes from requests through the gateway to the service's
CPU-burning endpoint, and the outcome is read from the runtime's state, its upstreams file
and its kube_* series — the same series kube-state-metrics exposes on a cluster. The HPA is
configured short (1 s sync, 3 s scale-down window) so the test ends in seconds.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ofsre.instrumentation import semconv
from ofsre.platform.runtime import LocalRuntime, RuntimeConfig, ServiceConfig
from ofsre.platform.runtime.files import read_json
from ofsre.platform.runtime.hpa import DEFAULT_SCALE_DOWN, ControllerConfig, ScalingRules

SYNC_S, WINDOW_S = 1.0, 3.0


def kube_series(runtime: LocalRuntime) -> dict[tuple[str, tuple], float]:
    """The runtime's /metrics as {(name, sorted labels): value}."""
    text = httpx.get(runtime.endpoints()["runtime_metrics"]).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def hpa_value(series, spec, **labels) -> float:
    key = (spec.name,
           tuple(sorted({"namespace": "ofsre", "horizontalpodautoscaler": "consents", **labels}.items())))
    return series[key]


@pytest.fixture
def runtime(tmp_path, standin_command):
    cfg = RuntimeConfig(
        data_dir=tmp_path, gateway_port=0, command=tuple(standin_command), migrate_command=None,
        services=(ServiceConfig("consents", replicas=1, min_replicas=1, max_replicas=3, cpu_request=0.1,
                                cpu_target=50, memory_target=None),),
        controller=ControllerConfig(sync_period=SYNC_S),
        scale_down=ScalingRules(WINDOW_S, DEFAULT_SCALE_DOWN.policies),
        deregistration_delay=0.2, termination_grace=5.0, startup_timeout=30.0,
    )
    rt = LocalRuntime(cfg)
    rt.start()
    yield rt
    rt.stop()


class Load:
    """Two clients calling the CPU-burning endpoint through the gateway until stopped."""

    def __init__(self, gateway: str):
        self.url = f"{gateway}/svc/consents/burn?ms=40"
        self.stop = threading.Event()
        self.pids: set[int] = set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url)
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    self.pids.add(int(r.text))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_cpu_load_adds_a_replica_process_and_idleness_removes_it(runtime, wait_for):
    consents = runtime.deployments["consents"]
    series = kube_series(runtime)
    assert hpa_value(series, semconv.KUBE_HPA_CURRENT_REPLICAS) == 1
    assert hpa_value(series, semconv.KUBE_HPA_MIN_REPLICAS) == 1
    assert hpa_value(series, semconv.KUBE_HPA_MAX_REPLICAS) == 3
    first = consents.replicas()[0]

    with Load(runtime.endpoints()["gateway"]) as load:
        wait_for(lambda: consents.available() >= 2)
        added = [r for r in consents.replicas() if r is not first and r.state == "ready"]
        # The gateway (reading the upstreams file) sends load to the new processes too.
        wait_for(lambda: any(r.pid in load.pids for r in added))
        # status.currentReplicas is the size seen at the start of a sync: it follows one sync later.
        series = wait_for(lambda: (s := kube_series(runtime))
                          and hpa_value(s, semconv.KUBE_HPA_CURRENT_REPLICAS) >= 2 and s)
        assert hpa_value(series, semconv.KUBE_HPA_CONDITION, condition="ScalingActive", status="true") == 1
        available = series[(semconv.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE.name,
                            (("deployment", "consents"), ("namespace", "ofsre")))]
        assert available >= 2
        upstreams = read_json(runtime.paths.upstreams)["consents"]
        assert {r.url for r in added} <= set(upstreams)
        load_stopped_at = time.time()

    wait_for(lambda: consents.spec_replicas == 1 and len(consents.replicas()) == 1)
    assert all(r.process.poll() is not None for r in added)  # the processes are really gone
    assert [r.url for r in consents.replicas()] == read_json(runtime.paths.upstreams)["consents"]
    series = wait_for(lambda: (s := kube_series(runtime))
                      and hpa_value(s, semconv.KUBE_HPA_CURRENT_REPLICAS) == 1 and s)
    assert hpa_value(series, semconv.KUBE_HPA_DESIRED_REPLICAS) == 1

    events = runtime.status()["events"]
    ups = [e for e in events
           if "cpu resource utilization (percentage of request) above target" in e["message"]]
    downs = [e for e in events if e["message"].endswith("All metrics below target")]
    assert ups and downs and ups[0]["time"] < downs[0]["time"]
    # The scale-down waited for the stabilisation window: the last high recommendation was made at
    # most one sync after the load stopped, and the window counts from there.
    assert downs[0]["time"] - load_stopped_at >= WINDOW_S - SYNC_S

    status = runtime.status()
    (replica,) = status["deployments"]["consents"]["replicas"]
    assert replica["cpu_cores"] is not None and replica["memory_bytes"] > 0
