"""Stopping a detached runtime (what ``ofsre platform down`` calls), with real processes."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from ofsre.platform.runtime.files import atomic_write_json
from ofsre.platform.runtime.process import Stopped, read_state, stop_detached
from ofsre.platform.runtime.runtime import RuntimePaths, process_alive

_SLEEP = "import time; time.sleep(60)"
_DEAF = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, "
         "flush=True); time.sleep(60)")


@pytest.fixture
def spawn():
    """``spawn(code)`` -> (the child, its pid and creation time as the state file has them); killed after."""
    children = []

    def start(code: str) -> tuple[subprocess.Popen, dict]:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        children.append(child)
        return child, {"pid": child.pid, "create_time": psutil.Process(child.pid).create_time()}

    yield start
    for child in children:
        child.kill()
        child.wait(5)
        child.stdout.close()


def _write_state(paths: RuntimePaths, runtime: dict, replicas: list[dict]) -> None:
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.state, {**runtime, "phase": "running", "replicas": {"consents": replicas}})


def test_nothing_to_stop_without_a_state_file(tmp_path):
    assert stop_detached(RuntimePaths(tmp_path), timeout_s=1) is None


def test_stops_the_runtime_and_the_replicas_it_left_behind(tmp_path, spawn):
    paths = RuntimePaths(tmp_path)
    (runtime, runtime_id), (replica, replica_id) = spawn(_SLEEP), spawn(_SLEEP)
    _write_state(paths, runtime_id, [replica_id])
    told = []
    stopped = stop_detached(paths, timeout_s=10, on_stopping=told.append)
    assert stopped == Stopped(pid=runtime.pid, was_running=True, killed=False, leftovers=1)
    assert told == [runtime.pid]
    assert runtime.wait(5) == -15 and replica.wait(5) == -15  # SIGTERM, both
    assert read_state(paths) is None and not paths.state.exists()


def test_a_runtime_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path, spawn):
    paths = RuntimePaths(tmp_path)
    runtime, runtime_id = spawn(_DEAF)
    runtime.stdout.readline()  # its SIGTERM handler is in place
    _write_state(paths, runtime_id, [])
    began = time.monotonic()
    stopped = stop_detached(paths, timeout_s=0.5)
    assert stopped == Stopped(pid=runtime.pid, was_running=True, killed=True, leftovers=0)
    assert time.monotonic() - began >= 0.5 and runtime.wait(5) == -9


def test_a_stale_state_is_cleaned_up_without_signalling_a_reused_pid(tmp_path, spawn):
    paths = RuntimePaths(tmp_path)
    other, other_id = spawn(_SLEEP)  # a live process whose pid the stale state names, created at another time
    _write_state(paths, {"pid": other.pid, "create_time": other_id["create_time"] - 100}, [])
    assert stop_detached(paths, timeout_s=1) == Stopped(pid=other.pid, was_running=False, killed=False,
                                                        leftovers=0)
    assert process_alive(other.pid) and not paths.state.exists()
