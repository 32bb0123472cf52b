"""The process supervisor with real processes (the stand-in service) on loopback."""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx

from ofsre.platform.runtime.files import atomic_write_json, read_json
from ofsre.platform.runtime.supervisor import READY, Deployment


def make(deployments, tmp_path, command, **kw) -> Deployment:
    kw.setdefault("termination_grace", 5.0)
    dep = Deployment(kw.pop("name", "svc"), command, log_dir=tmp_path / "logs", **kw)
    deployments.append(dep)
    return dep


def test_replicas_are_separate_processes_listed_only_once_ready(deployments, tmp_path, standin_command):
    dep = make(deployments, tmp_path, standin_command, replicas=2, env={"STANDIN_READY_DELAY": "0.5"})
    dep.reconcile()
    assert len(dep.replicas()) == 2
    assert dep.ready_urls() == []  # started, but /readyz still answers 503
    assert dep.wait_ready(20)
    urls = dep.ready_urls()
    pids = {int(httpx.get(u + "/pid").text) for u in urls}
    assert len(set(urls)) == 2 and len(pids) == 2
    assert pids == {r.pid for r in dep.replicas()}
    assert all(r.state == READY and r.ready_at >= r.started_at for r in dep.replicas())


def test_scale_down_deregisters_the_replica_before_sigterm(deployments, tmp_path, standin_command):
    seen: list[tuple[list[str], dict[str, bool]]] = []

    def on_change(d: Deployment) -> None:  # what the upstreams file would say, and who is alive then
        seen.append((d.ready_urls(), {r.url: r.process.poll() is None for r in d.replicas()}))

    dep = make(deployments, tmp_path, standin_command, replicas=2, on_change=on_change)
    dep.reconcile()
    assert dep.wait_ready(20)
    newest = max(dep.replicas(), key=lambda r: r.ready_at)
    dep.scale(1)
    dep.join(15)
    assert newest.url not in dep.ready_urls() and len(dep.ready_urls()) == 1
    first_without = next(i for i, (urls, _) in enumerate(seen) if newest.url not in urls and len(urls) == 1)
    assert seen[first_without][1][newest.url] is True  # removed from the list while still running
    assert newest.process.returncode == 0  # it handled SIGTERM and exited cleanly
    assert "SIGTERM received" in newest.log_path.read_text()


def test_sigkill_after_the_grace_period(deployments, tmp_path, standin_command):
    dep = make(deployments, tmp_path, standin_command, env={"STANDIN_IGNORE_SIGTERM": "1"},
               termination_grace=0.5)
    dep.reconcile()
    assert dep.wait_ready(20)
    replica = dep.replicas()[0]
    dep.stop(timeout=15)
    assert replica.process.returncode == -signal.SIGKILL
    assert "SIGTERM ignored" in replica.log_path.read_text()
    assert dep.replicas() == []


def test_a_crashed_replica_is_replaced(deployments, tmp_path, standin_command, wait_for):
    dep = make(deployments, tmp_path, standin_command, replicas=1)
    dep.reconcile()
    assert dep.wait_ready(20)
    first = dep.replicas()[0]
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()

    def replaced():
        dep.reconcile()
        return [r for r in dep.replicas() if r is not first and r.state == READY]

    (second,) = wait_for(replaced)
    assert second.name != first.name and second.url in dep.ready_urls()
    assert first.url not in dep.ready_urls()
    assert "exited with code -9" in dep.last_failure


def test_a_service_that_cannot_start_reports_why(deployments, tmp_path, standin_command, wait_for):
    dep = make(deployments, tmp_path, standin_command, env={"STANDIN_EXIT_CODE": "3"})
    dep.reconcile()
    wait_for(lambda: dep.reconcile() or dep.last_failure)
    assert dep.ready_urls() == []
    assert "exited with code 3" in dep.last_failure
    assert "exiting at once as asked" in dep.last_failure  # the log tail explains it


def test_a_replica_never_ready_is_stopped_after_the_startup_timeout(deployments, tmp_path, standin_command,
                                                                   wait_for):
    dep = make(deployments, tmp_path, standin_command, env={"STANDIN_READY_DELAY": "3600"},
               startup_timeout=0.5)
    dep.reconcile()
    first = dep.replicas()[0]
    wait_for(lambda: first.process.poll() is not None)
    assert "not ready after 0.5 s" in dep.last_failure
    assert first.url not in dep.ready_urls()


def test_atomic_write_never_shows_a_partial_file(tmp_path):
    path = tmp_path / "upstreams.json"
    atomic_write_json(path, {"consents": []})
    stop, bad = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as exc:  # pragma: no cover - the failure this test looks for
                bad.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        atomic_write_json(path, {"consents": [f"http://127.0.0.1:{8000 + j}" for j in range(i % 50)]})
    stop.set()
    t.join()
    assert bad == []
    assert len(read_json(path)["consents"]) == 299 % 50
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind
