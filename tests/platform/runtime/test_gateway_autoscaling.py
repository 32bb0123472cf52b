"""The gateway is autoscaled like every module: replicas share the one gateway port.

Real processes (the stand-in service as gateway and module, see standin_service.py): CPU load
on the gateway port makes the HPA add gateway replicas, every replica accepts new connections
from the runtime's one listening socket, and idleness removes them again after the window.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from ofsre.platform.runtime import LocalRuntime, RuntimeConfig, ServiceConfig
from ofsre.platform.runtime.hpa import DEFAULT_SCALE_DOWN, ControllerConfig, ScalingRules


@pytest.fixture
def runtime(tmp_path, standin_command):
    cfg = RuntimeConfig(
        data_dir=tmp_path, gateway_port=0, command=tuple(standin_command), migrate_command=None,
        services=(ServiceConfig("consents", autoscale=False),),
        gateway=ServiceConfig("gateway", routed=False, max_replicas=3, cpu_request=0.1, cpu_target=50,
                              memory_target=None),
        controller=ControllerConfig(sync_period=1.0),
        scale_down=ScalingRules(3.0, DEFAULT_SCALE_DOWN.policies),
        termination_grace=5.0, startup_timeout=30.0)
    rt = LocalRuntime(cfg)
    rt.start()
    yield rt
    rt.stop()


def test_gateway_replicas_are_added_on_the_shared_port_and_removed(runtime, wait_for):
    gateway = runtime.deployments.get("gateway") or runtime.gateway
    url = runtime.endpoints()["gateway"]
    # not a replica's own port
    assert url.endswith(f":{runtime.gateway_port}") and url not in gateway.ready_urls()
    assert "gateway" in runtime.status()["hpa"]
    pids: set[int] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:  # a new connection per call, so any replica may accept it
                r = httpx.get(f"{url}/burn?ms=30", timeout=10)
                if r.status_code == 200:
                    pids.add(int(r.text))
            except httpx.HTTPError:
                pass

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: gateway.available() >= 2)
        replica_pids = {r.pid for r in gateway.replicas()}
        wait_for(lambda: len(pids & replica_pids) >= 2)  # answers came from two gateway processes
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    events = [e for e in runtime.status()["events"] if e["hpa"] == "gateway"]
    assert any(e["reason"] == "SuccessfulRescale" and "above target" in e["message"] for e in events)
    wait_for(lambda: gateway.spec_replicas == 1 and len(gateway.replicas()) == 1)
    # the remaining replica still serves the port
    assert httpx.get(f"{url}/pid", timeout=5).status_code == 200


def test_the_gateway_has_an_hpa_by_default_and_no_autoscale_fixes_it_too():
    import argparse

    from ofsre.platform.runtime.cli import build_config, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    assert build_config(parser.parse_args(["up"])).gateway.autoscale
    fixed = build_config(parser.parse_args(["up", "--no-autoscale"]))
    assert not fixed.gateway.autoscale and not any(s.autoscale for s in fixed.services)


def test_a_gateway_replica_that_leaves_drops_no_waiting_connection(tmp_path, standin_command, wait_for):
    """The replicas accept from the runtime's one listening socket. A replica that stops
    accepting a second before it exits (busy, or draining) leaves the connections that arrive
    meanwhile to the others; with a queue of its own (SO_REUSEPORT) they would be reset."""
    cfg = RuntimeConfig(
        data_dir=tmp_path, gateway_port=0, command=tuple(standin_command), migrate_command=None,
        services=(ServiceConfig("consents", autoscale=False),),
        gateway=ServiceConfig("gateway", routed=False, autoscale=False, replicas=2,
                              env={"STANDIN_SLOW_CLOSE_S": "1.0"}),
        termination_grace=5.0, startup_timeout=30.0)
    rt = LocalRuntime(cfg)
    rt.start()
    try:
        url = rt.endpoints()["gateway"]
        answered: list[int] = []
        failed: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:  # a new connection per call: each one waits in the accept queue
                    answered.append(int(httpx.get(f"{url}/pid", timeout=5).text))
                except httpx.HTTPError as exc:
                    failed.append(type(exc).__name__)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(set(answered)) == 2)  # both replicas answer on the shared port
        pids = {r.pid for r in rt.gateway.replicas()}
        rt.gateway.scale(1)
        wait_for(lambda: len(rt.gateway.replicas()) == 1)  # the other one stopped and exited
        (left,) = pids - {r.pid for r in rt.gateway.replicas()}
        before = len(answered)
        wait_for(lambda: len(answered) > before + 20)  # the one left goes on serving
        stop.set()
        for t in threads:
            t.join(10)
        assert failed == []
        assert left in answered and set(answered[before:]) == pids - {left}
    finally:
        rt.stop()
