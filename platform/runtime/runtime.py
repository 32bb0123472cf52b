"""The local runtime: the whole platform as real processes on loopback, autoscaled.

:class:`LocalRuntime` is what ``ofsre platform up`` and ``ofsre demo`` drive::

    from ofsre.platform.runtime import LocalRuntime, RuntimeConfig

    rt = LocalRuntime(RuntimeConfig(data_dir=Path("var"), gateway_port=0))
    rt.start()                 # migrate, services (N replicas each), gateway, autoscaler, scrape config
    rt.endpoints()["gateway"]  # 'http://127.0.0.1:41234'
    rt.status()                # replicas with CPU/memory, HPA state, events
    rt.stop()                  # everything, cleanly

Start order: schema migration (``python -m ofsre.platform.run migrate``), the runtime's own
endpoint, every service's replicas (in parallel, each gated on ``/readyz``), the upstreams
file, the gateway (``OFSRE_UPSTREAMS_FILE``), the autoscaler, the Prometheus scrape config and,
if asked, Prometheus. Files under ``data_dir``: ``runtime.json`` (state, for ``status``/``down``
from another shell), ``upstreams.json``, ``prometheus/``, ``logs/<replica>.log``, ``ofsre.db``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry

from .autoscaler import Autoscaler
from .config import RuntimeConfig, ServiceConfig
from .files import atomic_write_json, listening_socket, port_free, read_json
from .prometheus import prometheus_command, write_scrape_config, write_targets
from .server import RuntimeServer
from .simulation import new_secret
from .supervisor import Deployment, tail

__all__ = ["LocalRuntime", "RuntimeStartError", "RuntimePaths", "mask_url", "process_alive"]

log = logging.getLogger(__name__)

_GIVE_UP_AFTER_FAILURES = 3  # consecutive start failures of one service during `up`


class RuntimeStartError(RuntimeError):
    """The platform could not be started; the message says which process and why."""


class RuntimePaths:
    """Where the runtime keeps its files under the data directory."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.state = self.data_dir / "runtime.json"          # for `status` / `down` from another shell
        self.upstreams = self.data_dir / "upstreams.json"    # OFSRE_UPSTREAMS_FILE of the gateway
        self.logs = self.data_dir / "logs"
        self.prometheus = self.data_dir / "prometheus"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def process_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True if ``pid`` runs and (when given) was created at ``create_time`` — not a reused pid."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 0.01
    except psutil.Error:
        return False


class LocalRuntime:
    """Starts, supervises, autoscales and stops the platform (see the module docstring)."""

    def __init__(self, config: RuntimeConfig, *, registry: CollectorRegistry | None = None):
        self.config = config
        self.paths = RuntimePaths(config.data_dir)
        self.registry = registry or CollectorRegistry()
        self.autoscaler = Autoscaler(registry=self.registry, config=config.controller,
                                     namespace=config.namespace)
        self.deployments: dict[str, Deployment] = {}
        self.gateway: Deployment | None = None
        self.gateway_port = 0  # the port every gateway replica serves (chosen at start when 0)
        self._gateway_listener: socket.socket | None = None  # that port's socket, inherited by the replicas
        self.prometheus: Deployment | None = None
        self.server: RuntimeServer | None = None
        self.scrape_config: Path | None = None
        self.phase = "new"
        self._started_wall = time.time()
        self._files_lock = threading.Lock()
        self._create_times: dict[int, float] = {}
        self._stop_tick = threading.Event()
        self._tick: threading.Thread | None = None
        self.gateway_secret = ""  # a fresh one at every start()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start everything; on failure stop what was started and raise :class:`RuntimeStartError`."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self._refuse_if_running()
        for what, port in (("gateway", cfg.gateway_port), ("runtime", cfg.runtime_port),
                           ("prometheus", cfg.prometheus_port if cfg.prometheus else 0)):
            if port and not port_free(cfg.host, port):
                raise RuntimeStartError(f"{what} port {cfg.host}:{port} is in use (another `ofsre "
                                        f"platform up`?); choose another port or 0 for a free one")
        self.phase = "starting"
        self._write_state()
        # One secret per start, shared by the gateway and the modules only (guard.py).
        self.gateway_secret = new_secret(self.paths.data_dir)
        self.migrate()
        self.server = RuntimeServer(self.registry, self.status, host=cfg.host, port=cfg.runtime_port)
        self.server.start()
        for svc in cfg.services:
            self.deployments[svc.name] = self._deployment(svc, cfg.command)
        self._bring_up(list(self.deployments.values()))
        self._write_files()
        # Every gateway replica serves the one gateway port besides a port of its own (where it is
        # probed and scraped like any replica). The runtime owns that port's listening socket and
        # every replica inherits it: they accept from one queue, so a replica that leaves takes no
        # waiting connection with it (with SO_REUSEPORT each would own a queue, reset on close).
        self._gateway_listener = listening_socket(cfg.host, cfg.gateway_port)
        self.gateway_port = self._gateway_listener.getsockname()[1]
        gateway_max = cfg.gateway.max_replicas if cfg.gateway.autoscale else cfg.gateway.replicas
        self.gateway = self._deployment(cfg.gateway, cfg.command, pass_fds=(self._gateway_listener.fileno(),),
                                        env={
            "OFSRE_UPSTREAMS_FILE": str(self.paths.upstreams.resolve()),
            "OFSRE_SHARED_FD": str(self._gateway_listener.fileno()),
            "OFSRE_GATEWAY_REPLICAS": str(gateway_max)})
        self._bring_up([self.gateway])
        for svc in cfg.services:
            dep = self.deployments[svc.name]
            if svc.autoscale:
                self.autoscaler.add(svc.hpa_spec(cfg.scale_up, cfg.scale_down), dep, svc.requests)
            else:
                self.autoscaler.watch(dep, svc.requests)
        if cfg.gateway.autoscale:  # the chart gives the gateway an HPA too
            self.autoscaler.add(cfg.gateway.hpa_spec(cfg.scale_up, cfg.scale_down), self.gateway,
                                cfg.gateway.requests)
        else:
            self.autoscaler.watch(self.gateway, cfg.gateway.requests)
        self.autoscaler.start()
        runtime_target = self.server.url.split("://", 1)[1]
        self.scrape_config = write_scrape_config(self.paths.prometheus, runtime_target=runtime_target,
                                                 scrape_interval=cfg.scrape_interval)
        if cfg.prometheus:
            self._start_prometheus(self.scrape_config)
        self._stop_tick.clear()
        self._tick = threading.Thread(target=self._reconcile_loop, name="runtime-reconcile", daemon=True)
        self._tick.start()
        self.phase = "running"
        self._write_files()

    def stop(self) -> None:
        """Stop everything (idempotent): gateway first, then every replica in parallel."""
        if self.phase in ("stopped", "new"):
            return
        self.phase = "stopping"
        self._write_state()
        self._stop_tick.set()
        if self._tick is not None:
            self._tick.join(5)
        self.autoscaler.stop()
        others = [d for d in (self.prometheus, *self.deployments.values()) if d is not None]
        if self.gateway is not None:
            self.gateway.stop(timeout=self.config.termination_grace + 5)
        for dep in others:
            dep.deregistration_delay = 0.0  # nothing routes to them any more
            dep.scale(0)
        for dep in others:
            dep.stop(timeout=self.config.termination_grace + 5)
        if self._gateway_listener is not None:
            self._gateway_listener.close()
            self._gateway_listener = None
        if self.server is not None:
            self.server.stop()
        self.phase = "stopped"
        self.paths.state.unlink(missing_ok=True)

    def serve(self, stop: threading.Event | None = None, on_ready=None) -> None:
        """Start, call ``on_ready(self)``, run until ``stop`` is set or SIGINT/SIGTERM, then stop."""
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            if on_ready is not None:
                on_ready(self)
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()

    def migrate(self) -> None:
        """Create the schema (idempotent) with the services' own runner."""
        cmd = self.config.migrate_command
        if not cmd:
            return
        env = {**os.environ, **self.config.service_env()}
        out = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=300)
        log_path = self.paths.logs / "migrate.log"
        log_path.write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise RuntimeStartError(f"schema migration failed (exit {out.returncode}): {' '.join(cmd)}\n"
                                    f"{tail(log_path)}")

    # ----------------------------------------------------------------- queries

    def all_deployments(self) -> list[Deployment]:
        return [d for d in (*self.deployments.values(), self.gateway, self.prometheus) if d is not None]

    def endpoints(self) -> dict[str, Any]:
        """Where everything listens (what ``up`` prints)."""
        def first(dep: Deployment | None) -> str | None:
            urls = dep.ready_urls() if dep is not None else []
            return urls[0] if urls else None
        return {
            "gateway": f"http://{self.config.host}:{self.gateway_port}" if first(self.gateway) else None,
            "runtime_metrics": f"{self.server.url}/metrics" if self.server else None,
            "runtime_status": f"{self.server.url}/status" if self.server else None,
            "prometheus": first(self.prometheus),
            "scrape_config": str(self.scrape_config) if self.scrape_config else None,
            "upstreams_file": str(self.paths.upstreams),
            "logs": str(self.paths.logs),
            "database_url": mask_url(self.config.resolved_database_url),
            "queue_backend": self.config.queue_backend,
            "services": {d.name: d.ready_urls() for d in self.deployments.values()},
        }

    def status(self) -> dict[str, Any]:
        st = self.autoscaler.status()
        st["runtime"] = {"pid": os.getpid(), "phase": self.phase, "started": self._started_wall,
                         "uptime_seconds": round(time.time() - self._started_wall, 1)}
        st["endpoints"] = self.endpoints()
        return st

    # ----------------------------------------------------------------- internals

    def _deployment(self, svc: ServiceConfig, command: tuple[str, ...], *, port: int | None = None,
                    env: dict[str, str] | None = None, readiness_path: str | None = None,
                    pass_fds: tuple[int, ...] = ()) -> Deployment:
        cfg = self.config
        return Deployment(
            svc.name, command, log_dir=self.paths.logs, replicas=svc.replicas, host=cfg.host, port=port,
            env={**cfg.service_env(), "OFSRE_GATEWAY_SECRET": self.gateway_secret, **svc.env, **(env or {})},
            readiness_path=readiness_path or cfg.readiness_path, startup_timeout=cfg.startup_timeout,
            termination_grace=cfg.termination_grace,
            # Only a replica behind the gateway needs time for the gateway to forget it.
            deregistration_delay=cfg.deregistration_delay if svc.routed else 0.0,
            on_change=lambda _dep: self._write_files(), pass_fds=pass_fds)

    def _bring_up(self, deps: list[Deployment]) -> None:
        for dep in deps:
            dep.reconcile()
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            if all(d.available() >= d.spec_replicas for d in deps):
                return
            for d in deps:
                if d.failures >= _GIVE_UP_AFTER_FAILURES:
                    raise RuntimeStartError(f"{d.name} failed to start {d.failures} times: {d.last_failure}")
                d.reconcile()
            time.sleep(0.1)
        late = [d for d in deps if d.available() < d.spec_replicas]
        raise RuntimeStartError("; ".join(f"{d.name} not ready after {self.config.startup_timeout:g} s"
                                          f" ({d.last_failure or 'no error logged'})" for d in late))

    def _start_prometheus(self, scrape_config: Path) -> None:
        cfg = self.config
        cmd = prometheus_command(cfg.prometheus_binary, scrape_config, self.paths.prometheus / "data")
        svc = ServiceConfig("prometheus", autoscale=False, routed=False)
        self.prometheus = self._deployment(svc, cmd, port=cfg.prometheus_port or None,
                                           readiness_path="/-/ready")
        self._bring_up([self.prometheus])

    def _reconcile_loop(self) -> None:
        # Notices crashed replicas between autoscaler syncs (the kubelet/ReplicaSet part).
        while not self._stop_tick.wait(self.config.reconcile_interval):
            for dep in self.all_deployments():
                dep.reconcile()

    def _refuse_if_running(self) -> None:
        state = read_json(self.paths.state)
        if state and state.get("pid") != os.getpid() and process_alive(state.get("pid"),
                                                                       state.get("create_time")):
            raise RuntimeStartError(f"a runtime (pid {state['pid']}) already uses {self.paths.data_dir}; "
                                    "run `ofsre platform down` first or pick another --data-dir")

    def _write_files(self) -> None:
        """Upstreams file, Prometheus targets, state file, kube_* gauges: after every change."""
        with self._files_lock:
            routed = {s.name for s in self.config.services if s.routed}
            upstreams = {name: dep.ready_urls() for name, dep in self.deployments.items() if name in routed}
            atomic_write_json(self.paths.upstreams, upstreams)
            services = [*self.deployments.values(), *([self.gateway] if self.gateway else [])]
            write_targets(self.paths.prometheus / "targets.json", services, self.config.namespace)
            self._write_state()
            self.autoscaler.publish()

    def _create_time(self, pid: int) -> float | None:
        if pid not in self._create_times:
            try:
                self._create_times[pid] = psutil.Process(pid).create_time()
            except psutil.Error:
                return None
        return self._create_times[pid]

    def _write_state(self) -> None:
        if self.phase in ("stopped", "new"):
            return
        replicas = {}
        for dep in self.all_deployments():
            replicas[dep.name] = [{**r.as_dict(), "create_time": self._create_time(r.pid)}
                                  for r in dep.replicas()]
        atomic_write_json(self.paths.state, {
            "pid": os.getpid(), "create_time": self._create_time(os.getpid()), "phase": self.phase,
            "started": self._started_wall, "data_dir": str(self.paths.data_dir.resolve()),
            "endpoints": self.endpoints(), "replicas": replicas,
        })
