"""``ofsre platform up/status/down`` as a user runs them, with stand-in services.

``up --detach`` in one process, ``status`` and ``down`` in others (as from another shell),
Prometheus started with the generated scrape config and queried for the kube_* series;
then a foreground ``up`` stopped with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from ofsre.platform.runtime import LocalRuntime, RuntimeConfig, RuntimeStartError
from ofsre.platform.runtime.files import read_json
from ofsre.platform.runtime.runtime import process_alive


def ofsre(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ofsre", *args], capture_output=True, text=True,
                          timeout=timeout)


def write_config(path, standin_command, **runtime) -> None:
    lines = ["[runtime]", f"command = {json.dumps(standin_command)}", "migrate_command = []",
             "deregistration_delay = 0.2", "termination_grace = 5.0", 'scrape_interval = "1s"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in runtime.items()]
    lines += ["[autoscaler]", "sync_period = 1", "[services.consents]", "max_replicas = 2"]
    path.write_text("\n".join(lines) + "\n")


def prometheus_value(base: str, query: str) -> float | None:
    data = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
    return float(data[0]["value"][1]) if data else None


def test_detached_up_status_down_with_prometheus(tmp_path, standin_command, wait_for):
    config = tmp_path / "runtime.toml"
    write_config(config, standin_command)
    data = tmp_path / "var"
    common = ("--data-dir", str(data))
    up = ofsre("platform", "up", "--detach", "--config", str(config), "--gateway-port", "0",
               "--services", "consents,worker", "--prometheus", *common)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "gateway" in up.stdout and "/metrics  (kube_* series)" in up.stdout
        state = read_json(data / "runtime.json")
        assert state["phase"] == "running" and process_alive(state["pid"], state["create_time"])

        # Files the runtime keeps for the gateway and Prometheus.
        assert set(read_json(data / "upstreams.json")) == {"consents"}  # the worker is not routed
        pods = {g["labels"]["pod"] for g in read_json(data / "prometheus" / "targets.json")}
        assert pods == {"consents-1", "worker-1", "gateway-1"}
        check = subprocess.run(["promtool", "check", "config", str(data / "prometheus" / "prometheus.yml")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

        # Prometheus scrapes the runtime's kube_* series and every replica.
        prom = state["endpoints"]["prometheus"]
        assert prom
        query = 'kube_horizontalpodautoscaler_spec_max_replicas{horizontalpodautoscaler="consents"}'
        assert wait_for(lambda: prometheus_value(prom, query)) == 2
        consents_up = 'count(up{job="consents",namespace="ofsre"} == 1)'
        assert wait_for(lambda: prometheus_value(prom, consents_up)) == 1

        status = ofsre("platform", "status", *common)
        assert status.returncode == 0, status.stderr
        assert "consents-1" in status.stdout and "worker-1" in status.stdout and "gateway-1" in status.stdout
        assert "ScalingActive=" in status.stdout
        as_json = json.loads(ofsre("platform", "status", "--json", *common).stdout)
        assert as_json["hpa"]["consents"]["max_replicas"] == 2
        assert {r["name"] for r in as_json["deployments"]["worker"]["replicas"]} == {"worker-1"}

        again = ofsre("platform", "up", "--detach", "--config", str(config), *common)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = ofsre("platform", "down", *common)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not process_alive(state["pid"], state["create_time"])
    for replicas in state["replicas"].values():
        for r in replicas:
            assert not process_alive(r["pid"], r["create_time"]), r["name"]
    assert not (data / "runtime.json").exists()
    assert ofsre("platform", "status", *common).returncode == 3


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path, standin_command):
    config = tmp_path / "runtime.toml"
    write_config(config, standin_command)
    data = tmp_path / "var"
    proc = subprocess.Popen([sys.executable, "-m", "ofsre", "platform", "up", "--config", str(config),
                             "--gateway-port", "0", "--services", "consents", "--replicas", "2",
                             "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        state = read_json(data / "runtime.json")
        pids = [r["pid"] for r in state["replicas"]["consents"]]
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
        gateway = state["endpoints"]["gateway"]
        assert httpx.get(f"{gateway}/svc/consents/pid").status_code == 200  # routed through the gateway
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "platform stopped" in out
    assert not any(process_alive(p) for p in pids)
    assert not (data / "runtime.json").exists()


def test_up_reports_a_service_that_cannot_start(tmp_path, standin_command):
    config = tmp_path / "runtime.toml"
    write_config(config, standin_command, startup_timeout=20.0)
    env = {**os.environ, "STANDIN_EXIT_CODE": "4"}
    out = subprocess.run([sys.executable, "-m", "ofsre", "platform", "up", "--config", str(config),
                          "--gateway-port", "0", "--services", "consents", "--data-dir",
                          str(tmp_path / "var")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1
    assert "consents failed to start" in out.stderr and "exited with code 4" in out.stderr
    assert not (tmp_path / "var" / "runtime.json").exists()


def test_a_gateway_port_in_use_is_reported_before_anything_starts(tmp_path, standin_command):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = RuntimeConfig(data_dir=tmp_path, gateway_port=busy.getsockname()[1],
                            command=tuple(standin_command), migrate_command=None)
        with pytest.raises(RuntimeStartError, match="gateway port .* is in use"):
            LocalRuntime(cfg).start()
    assert not (tmp_path / "runtime.json").exists()
    assert list((tmp_path / "logs").glob("*.log")) == []  # no process was started
