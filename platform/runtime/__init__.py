"""ofsre.platform.runtime: the platform as real processes on loopback, autoscaled like Kubernetes.

* :mod:`.hpa` — the HorizontalPodAutoscaler algorithm as pure functions over a clock you pass in.
* :mod:`.supervisor` — :class:`Deployment`: N replica processes of a service, readiness-gated,
  deregistered before SIGTERM, SIGKILL after a grace period, replaced when they crash.
* :mod:`.usage` — per-replica CPU and memory with psutil (the local metrics-server).
* :mod:`.autoscaler` — the control loop; publishes kube-state-metrics' kube_* series.
* :mod:`.runtime` — :class:`LocalRuntime`: migrate, services, gateway, autoscaler, scrape config.
* :mod:`.process` — the runtime as a detached process: start it, find it, stop it.
* :mod:`.cli` / :mod:`.demo` — ``ofsre platform up|down|status|migrate`` and ``ofsre demo``.

Quick start::

    ofsre platform up --detach && ofsre platform status && ofsre platform down
"""

from .autoscaler import Autoscaler
from .config import RuntimeConfig, ServiceConfig
from .hpa import ControllerConfig, HPASpec, HPAState, ScalingPolicy, ScalingRules, reconcile
from .runtime import LocalRuntime, RuntimeStartError
from .supervisor import Deployment, Replica

__all__ = [
    "Autoscaler", "ControllerConfig", "Deployment", "HPASpec", "HPAState", "LocalRuntime", "Replica",
    "RuntimeConfig", "RuntimeStartError", "ScalingPolicy", "ScalingRules", "ServiceConfig", "reconcile",
]
