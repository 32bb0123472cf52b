"""Process supervisor: each :class:`Deployment` keeps N replica processes of one service running.

It plays the part of a Kubernetes Deployment/ReplicaSet plus the kubelet's readiness probe,
on loopback::

    from ofsre.platform.runtime.supervisor import Deployment

    dep = Deployment("consents", [sys.executable, "-m", "ofsre.platform.run", "{service}",
                                  "--host", "{host}", "--port", "{port}"],
                     replicas=2, log_dir=Path("var/logs"), on_change=lambda d: print(d.ready_urls()))
    dep.reconcile()          # starts 2 processes on free ports
    dep.wait_ready(30)       # True once both answer GET /readyz with 200
    dep.scale(1)             # the newest replica leaves ready_urls() first, then gets SIGTERM
    dep.stop()               # all replicas: deregister, SIGTERM, SIGKILL after the grace period

Lifecycle of a replica: ``starting`` (process running, /readyz polled) → ``ready`` (in
:meth:`Deployment.ready_urls`, so the runtime adds it to the gateway's upstreams file) →
``terminating`` (already out of ``ready_urls``; after ``deregistration_delay`` it gets SIGTERM,
then SIGKILL after ``termination_grace``) → gone. A replica that exits on its own, or is not
ready within ``startup_timeout``, is replaced, with an exponential back-off (like
CrashLoopBackOff) so a broken service does not spin.

``on_change(deployment)`` is called (outside any lock) whenever the set of replicas or
their readiness changes; the runtime uses it to rewrite the upstreams file, the Prometheus
targets and its state file. :meth:`reconcile` is idempotent; the runtime calls it
periodically so crashed replicas are noticed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from .files import free_port

__all__ = ["Replica", "Deployment", "STARTING", "READY", "TERMINATING", "EXITED", "tail"]

log = logging.getLogger(__name__)

STARTING, READY, TERMINATING, EXITED = "starting", "ready", "terminating", "exited"
_READY_POLL_S = 0.1
_MAX_BACKOFF_S = 10.0


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when it is missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(eq=False)
class Replica:
    """One process of a service."""

    name: str
    service: str
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    started_at: float            # runtime clock (monotonic)
    state: str = STARTING
    ready_at: float | None = None
    ready_transition_at: float = 0.0  # when readiness last changed (the Ready condition's timestamp)
    created_wall: float = field(default_factory=time.time)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "service": self.service, "pid": self.pid, "url": self.url,
                "state": self.state, "log": str(self.log_path), "created": self.created_wall}


class Deployment:
    """Keeps ``spec_replicas`` processes of one service running (see the module docstring).

    ``command`` items are formatted with ``service``, ``host``, ``port`` and ``replica``.
    ``port`` fixes the port of a single-replica deployment (the gateway); otherwise every
    replica gets a free port. ``env`` is added to the runtime's own environment. ``pass_fds``
    are inherited by every replica (the gateway's shared listening socket).
    """

    def __init__(self, name: str, command: Sequence[str], *, log_dir: Path, replicas: int = 1,
                 host: str = "127.0.0.1", port: int | None = None, env: Mapping[str, str] | None = None,
                 readiness_path: str = "/readyz", startup_timeout: float = 60.0,
                 termination_grace: float = 10.0,
                 deregistration_delay: float = 0.0, on_change: Callable[[Deployment], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, cwd: str | None = None,
                 pass_fds: Sequence[int] = ()):
        if port is not None and replicas > 1:
            raise ValueError("a fixed port allows a single replica")
        self.name = name
        self.command = tuple(command)
        self.host = host
        self.port = port
        self.env = dict(env or {})
        self.log_dir = Path(log_dir)
        self.readiness_path = readiness_path
        self.startup_timeout = startup_timeout
        self.termination_grace = termination_grace
        self.deregistration_delay = deregistration_delay
        self.on_change = on_change
        self.clock = clock
        self.cwd = cwd
        self.pass_fds = tuple(pass_fds)
        self.last_failure = ""  # why the last replica died or failed to become ready (with its log tail)
        self._spec = replicas
        self._lock = threading.RLock()
        self._replicas: list[Replica] = []
        self._seq = 0
        self._failures = 0
        self._not_before = 0.0
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- queries

    @property
    def spec_replicas(self) -> int:
        return self._spec

    def replicas(self) -> list[Replica]:
        """Every replica process that is still alive or being stopped (a snapshot)."""
        with self._lock:
            return list(self._replicas)

    def ready_urls(self) -> list[str]:
        with self._lock:
            return [r.url for r in self._replicas if r.state == READY]

    @property
    def failures(self) -> int:
        """Consecutive replicas that died or never became ready (reset when one becomes ready)."""
        return self._failures

    def available(self) -> int:
        with self._lock:
            return sum(r.state == READY for r in self._replicas)

    def wait_ready(self, timeout: float, poll: float = 0.05) -> bool:
        """True once ``spec_replicas`` replicas are ready; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.available() >= self._spec:
                return True
            self.reconcile()
            time.sleep(poll)
        return self.available() >= self._spec

    # ----------------------------------------------------------------- control

    def scale(self, replicas: int) -> None:
        """Set the desired number of replicas and act on it now."""
        with self._lock:
            self._spec = max(0, int(replicas))
        self.reconcile()

    def reconcile(self) -> None:
        """Reap exited processes, then start or stop replicas to match ``spec_replicas``."""
        changed, victims = False, []
        with self._lock:
            now = self.clock()
            for r in list(self._replicas):
                code = r.process.poll()
                if r.state in (STARTING, READY) and code is not None:
                    self._record_failure(r, f"{r.name} exited with code {code}")
                    self._forget(r)
                    changed = True
            live = [r for r in self._replicas if r.state in (STARTING, READY)]
            excess = len(live) - self._spec
            if excess > 0:
                # As a ReplicaSet does: not-ready replicas go first, then the most recently ready.
                victims = sorted(live, key=lambda r: (r.state == READY, -(r.ready_at or 0.0)))[:excess]
                for v in victims:
                    v.state = TERMINATING
                changed = True
            elif excess < 0 and not self._stopping and now >= self._not_before:
                for _ in range(-excess):
                    self._start_replica(now)
                changed = True
        if changed:
            self._notify()  # a victim leaves the upstreams file before it gets SIGTERM
        for v in victims:
            self._spawn(self._terminate, v, f"stop-{v.name}")

    def stop(self, timeout: float | None = None) -> None:
        """Stop every replica (deregister, SIGTERM, SIGKILL after the grace period) and wait."""
        with self._lock:
            self._stopping = True
            self._spec = 0
        self.reconcile()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background stop/readiness threads started so far."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------- internals

    def _start_replica(self, now: float) -> None:
        self._seq += 1
        name = f"{self.name}-{self._seq}"
        port = self.port if self.port is not None else free_port(self.host)
        argv = [part.format(service=self.name, host=self.host, port=port, replica=name)
                for part in self.command]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the Replica, closed when it is gone
        env = {**os.environ, **self.env}
        attrs = f"service.instance.id={name}"
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"{env['OTEL_RESOURCE_ATTRIBUTES']},{attrs}" \
            if env.get("OTEL_RESOURCE_ATTRIBUTES") else attrs
        # A session of its own: Ctrl-C in the terminal reaches the runtime only, which then
        # deregisters each replica before stopping it.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=env, cwd=self.cwd, start_new_session=True, pass_fds=self.pass_fds)
        replica = Replica(name, self.name, self.host, port, process, log_path, started_at=now,
                          ready_transition_at=now, _log_file=log_file)
        self._replicas.append(replica)
        log.info("started %s (pid %d) on %s", name, process.pid, replica.url)
        self._spawn(self._await_ready, replica, f"ready-{name}")

    def _await_ready(self, r: Replica) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = r.url + self.readiness_path
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if r.state != STARTING or r.process.poll() is not None:
                    break
                try:
                    if client.get(url).status_code == 200:
                        self._mark_ready(r)
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(_READY_POLL_S)
        with self._lock:
            timed_out = r.state == STARTING and r.process.poll() is None
            if timed_out:
                self._record_failure(r, f"{r.name} not ready after {self.startup_timeout:g} s")
                r.state = TERMINATING
        if timed_out:
            self._notify()
            self._terminate(r)
        self.reconcile()  # replace it (after the back-off) or reap it if it exited

    def _mark_ready(self, r: Replica) -> None:
        with self._lock:
            if r.state != STARTING:
                return
            r.state = READY
            r.ready_at = r.ready_transition_at = self.clock()
            self._failures = 0
        log.info("%s is ready", r.name)
        self._notify()

    def _terminate(self, r: Replica) -> None:
        if self.deregistration_delay > 0 and r.ready_at is not None:
            # Give the gateway time to re-read the upstreams file before the replica goes away.
            time.sleep(self.deregistration_delay)
        try:
            r.process.terminate()
            try:
                r.process.wait(self.termination_grace)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %g s: SIGKILL", r.name, self.termination_grace)
                r.process.kill()
                r.process.wait()
        except ProcessLookupError:
            pass
        with self._lock:
            self._forget(r)
        self._notify()

    def _forget(self, r: Replica) -> None:
        r.state = EXITED
        if r in self._replicas:
            self._replicas.remove(r)
        if r._log_file is not None:
            r._log_file.close()
            r._log_file = None

    def _record_failure(self, r: Replica, what: str) -> None:
        self._failures += 1
        self._not_before = self.clock() + min(_MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
        self.last_failure = f"{what}; last lines of {r.log_path}:\n{tail(r.log_path)}"
        log.warning("%s", what)

    def _spawn(self, target: Callable[[Replica], None], r: Replica, name: str) -> None:
        t = threading.Thread(target=target, args=(r,), name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _notify(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the supervisor
            log.exception("on_change listener failed for %s", self.name)
