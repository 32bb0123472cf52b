"""Configuration of the local runtime: which services, how many replicas, HPA settings.

Precedence: explicit values (CLI flags) over a TOML file over ``OFSRE_*`` environment
variables over defaults. The TOML file mirrors the dataclasses::

    [runtime]
    gateway_port = 8080
    deregistration_delay = 1.5

    [autoscaler]                 # kube-controller-manager flags and the HPA behaviour
    sync_period = 15             # --horizontal-pod-autoscaler-sync-period
    tolerance = 0.1
    scale_down_stabilization = 300
    scale_up_stabilization = 0

    [services.consents]          # any ServiceConfig field
    max_replicas = 6
    cpu_request = 0.5            # cores
    memory_request_mib = 512

Environment, read through the platform's declarations (:mod:`ofsre.instrumentation.config`, so the
words mean the same as for the services): ``OFSRE_DATA_DIR`` (default ``./var``),
``OFSRE_DATABASE_URL`` (default SQLite in the data dir), ``OFSRE_QUEUE_BACKEND`` (default ``db``),
``OFSRE_MTLS`` (``off``/``no``/``false``/``0`` disables client-certificate checks, local demo only).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ofsre.platform.queue._config import DATA_DIR, DATABASE_URL, QUEUE_BACKEND
from ofsre.platform.settings import MTLS, SIMULATION_ROUTES

from . import hpa

__all__ = ["MIB", "ServiceConfig", "RuntimeConfig", "RUNNER_COMMAND", "MIGRATE_COMMAND", "DEFAULT_SERVICES",
           "config_to_dict", "config_from_dict", "load_toml"]

MIB = 1024 * 1024

# The platform contract: every service is started by H4's runner.
RUNNER_COMMAND = (sys.executable, "-m", "ofsre.platform.run", "{service}",
                  "--host", "{host}", "--port", "{port}")
MIGRATE_COMMAND = (sys.executable, "-m", "ofsre.platform.run", "migrate")


@dataclass(frozen=True)
class ServiceConfig:
    """One service: its replica range, per-replica resource requests and HPA targets."""

    name: str
    replicas: int = 1                  # replicas at start
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_request: float = 0.25          # cores per replica (the pod's resources.requests.cpu)
    memory_request_mib: int = 256      # per replica (resources.requests.memory)
    cpu_target: int = 80               # averageUtilization, percent of the request
    memory_target: int | None = 80     # None: scale on CPU only
    autoscale: bool = True
    routed: bool = True                # behind the gateway (listed in the upstreams file)
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def requests(self) -> dict[str, float]:
        return {hpa.CPU: self.cpu_request, hpa.MEMORY: float(self.memory_request_mib * MIB)}

    def hpa_spec(self, scale_up: hpa.ScalingRules, scale_down: hpa.ScalingRules) -> hpa.HPASpec:
        metrics = [hpa.ResourceTarget(hpa.CPU, self.cpu_target)]
        if self.memory_target:
            metrics.append(hpa.ResourceTarget(hpa.MEMORY, self.memory_target))
        return hpa.HPASpec(self.name, max_replicas=self.max_replicas, min_replicas=self.min_replicas,
                           metrics=tuple(metrics), scale_up=scale_up, scale_down=scale_down)


DEFAULT_SERVICES = (
    ServiceConfig("consents"),
    ServiceConfig("accounts"),
    ServiceConfig("payments"),
    ServiceConfig("worker", routed=False),  # consumes the queue; not behind the gateway
)


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything ``ofsre platform up`` needs. Commands are formatted with service/host/port."""

    data_dir: Path = field(default_factory=lambda: Path(DATA_DIR.from_env()))
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    runtime_port: int = 0              # the runtime's own /metrics and /status (0: a free port)
    namespace: str = "ofsre"           # the namespace label of the kube_* series
    database_url: str | None = field(default_factory=lambda: DATABASE_URL.from_env() or None)
    queue_backend: str = field(default_factory=lambda: str(QUEUE_BACKEND.from_env()))
    mtls: bool = field(default_factory=lambda: bool(MTLS.from_env()))  # off/no/false/0, as for the services
    services: tuple[ServiceConfig, ...] = DEFAULT_SERVICES
    gateway: ServiceConfig = ServiceConfig("gateway", routed=False, cpu_request=0.5)  # autoscaled (the chart)
    controller: hpa.ControllerConfig = hpa.ControllerConfig()
    scale_up: hpa.ScalingRules = hpa.DEFAULT_SCALE_UP
    scale_down: hpa.ScalingRules = hpa.DEFAULT_SCALE_DOWN
    command: tuple[str, ...] = RUNNER_COMMAND
    migrate_command: tuple[str, ...] | None = MIGRATE_COMMAND
    readiness_path: str = "/readyz"
    startup_timeout: float = 60.0
    termination_grace: float = 10.0
    deregistration_delay: float = 1.5  # > the gateway's 1 s upstreams-file check
    reconcile_interval: float = 0.5    # how often crashed replicas are looked for
    prometheus: bool = False
    prometheus_binary: str = "prometheus"
    prometheus_port: int = 0
    scrape_interval: str = "5s"
    env: Mapping[str, str] = field(default_factory=dict)
    # The modules serve /_sim/… (the customer's simulated decision; see runtime/simulation.py).
    simulation_routes: bool = True

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'ofsre.db'}"

    def service_env(self) -> dict[str, str]:
        """The environment every service process gets on top of the runtime's own."""
        env = {DATA_DIR.name: str(self.data_dir.resolve()), DATABASE_URL.name: self.resolved_database_url,
               QUEUE_BACKEND.name: self.queue_backend}
        if not self.mtls:
            env[MTLS.name] = "off"
        if self.simulation_routes:
            env[SIMULATION_ROUTES.name] = "on"
        return {**env, **self.env}

    def service(self, name: str) -> ServiceConfig:
        return next(s for s in (*self.services, self.gateway) if s.name == name)

    def with_services(self, **changes: Any) -> RuntimeConfig:
        """The same config with ``changes`` applied to every service (e.g. ``replicas=1``)."""
        return replace(self, services=tuple(replace(s, **changes) for s in self.services))


# ----------------------------------------------------------------------------- (de)serialisation

def config_to_dict(cfg: RuntimeConfig) -> dict[str, Any]:
    """A JSON-ready dict (the detached runtime reads its config back with config_from_dict)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return conv(cfg)


def _rules(d: Mapping[str, Any]) -> hpa.ScalingRules:
    return hpa.ScalingRules(d["stabilization_window_seconds"],
                            tuple(hpa.ScalingPolicy(**p) for p in d["policies"]), d["select_policy"])


def config_from_dict(d: Mapping[str, Any]) -> RuntimeConfig:
    d = dict(d)
    d["data_dir"] = Path(d["data_dir"])
    d["services"] = tuple(ServiceConfig(**s) for s in d["services"])
    d["gateway"] = ServiceConfig(**d["gateway"])
    d["controller"] = hpa.ControllerConfig(**d["controller"])
    d["scale_up"], d["scale_down"] = _rules(d["scale_up"]), _rules(d["scale_down"])
    d["command"] = tuple(d["command"])
    d["migrate_command"] = tuple(d["migrate_command"]) if d.get("migrate_command") else None
    return RuntimeConfig(**d)


def load_toml(path: str | os.PathLike[str], base: RuntimeConfig | None = None) -> RuntimeConfig:
    """``base`` (default: from the environment) with the file's settings applied."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    cfg = base or RuntimeConfig()
    runtime = dict(raw.get("runtime", {}))
    if "data_dir" in runtime:
        runtime["data_dir"] = Path(runtime["data_dir"])
    for key in ("command", "migrate_command"):  # an empty migrate_command skips the migration
        if key in runtime:
            runtime[key] = tuple(runtime[key]) or None
    cfg = replace(cfg, **runtime)
    auto = dict(raw.get("autoscaler", {}))
    up_window = auto.pop("scale_up_stabilization", None)
    down_window = auto.pop("scale_down_stabilization", None)
    if auto:
        cfg = replace(cfg, controller=replace(cfg.controller, **auto))
    if up_window is not None:
        cfg = replace(cfg, scale_up=replace(cfg.scale_up, stabilization_window_seconds=up_window))
    if down_window is not None:
        cfg = replace(cfg, scale_down=replace(cfg.scale_down, stabilization_window_seconds=down_window))
    per_service = raw.get("services", {})
    unknown = set(per_service) - {s.name for s in (*cfg.services, cfg.gateway)}
    if unknown:
        raise ValueError(f"{path}: unknown services {sorted(unknown)}")
    services = tuple(replace(s, **per_service.get(s.name, {})) for s in cfg.services)
    gateway = replace(cfg.gateway, **per_service.get("gateway", {}))
    return replace(cfg, services=services, gateway=gateway)
