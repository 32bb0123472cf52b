"""The HPA control loop over local processes, publishing kube-state-metrics' series.

Every ``sync_period`` seconds (15 s by default, as kube-controller-manager) the
:class:`Autoscaler` does, for each HPA: observe (psutil usage of every replica process),
decide (:func:`ofsre.platform.runtime.hpa.reconcile`), act (:meth:`Deployment.scale`, which
starts or stops real processes). Its state is exposed with the names kube-state-metrics uses,
so the dashboards and alerts written for a cluster work locally too::

    registry = CollectorRegistry()
    scaler = Autoscaler(registry=registry, config=ControllerConfig(sync_period=1.0))
    scaler.add(HPASpec("consents", max_replicas=4), consents_deployment, {"cpu": 0.25, "memory": 256 * 2**20})
    scaler.watch(gateway_deployment, {"cpu": 0.5, "memory": 256 * 2**20})  # no HPA, still reported
    scaler.start()   # background thread; scaler.sync_once() runs one pass (tests)
    ...
    scaler.stop()

Series (labels as in kube-state-metrics; ``namespace`` is the runtime's namespace):
``kube_horizontalpodautoscaler_status_current_replicas``, ``…_status_desired_replicas``,
``…_spec_min_replicas``, ``…_spec_max_replicas``,
``…_status_condition{condition,status="true|false|unknown"}`` (1 for the current status,
0 for the others), ``…_spec_target_metric{metric_name,metric_target_type="utilization"}`` (the
target percentage), ``kube_deployment_status_replicas_available{deployment}`` and, per replica,
``kube_pod_container_resource_requests{pod,container,resource="cpu|memory",unit="core|byte"}``
(so usage ÷ request is computed the same way as on a cluster).
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from ofsre.instrumentation import semconv
from ofsre.instrumentation.metrics import gauge

from . import hpa
from .supervisor import READY, TERMINATING, Deployment, Replica
from .usage import UsageSampler

__all__ = ["Autoscaler", "HPABinding"]

log = logging.getLogger(__name__)

_CONDITION_STATUSES = ("true", "false", "unknown")
_KSM_UNITS = {hpa.CPU: "core", hpa.MEMORY: "byte"}  # kube-state-metrics' `unit` label per resource


@dataclass
class HPABinding:
    """One HPA: its spec, the deployment it scales, the pods' resource requests, its state."""

    spec: hpa.HPASpec
    deployment: Deployment
    requests: Mapping[str, float]
    state: hpa.HPAState = field(default_factory=hpa.HPAState)


def _pod(replica: Replica, requests: Mapping[str, float]) -> hpa.Pod:
    return hpa.Pod(replica.name, requests, ready=replica.state == READY, start_time=replica.started_at,
                   ready_transition_time=replica.ready_transition_at, deleting=replica.state == TERMINATING)


class Autoscaler:
    """Runs the HPA algorithm against local deployments (see the module docstring)."""

    def __init__(self, *, registry: CollectorRegistry, config: hpa.ControllerConfig | None = None,
                 namespace: str = "ofsre", sampler: UsageSampler | None = None,
                 clock: Callable[[], float] = time.monotonic, max_events: int = 100):
        self.config = config or hpa.ControllerConfig()
        self.namespace = namespace
        self.sampler = sampler or UsageSampler()
        self.clock = clock
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_events)
        self._bindings: dict[str, HPABinding] = {}
        self._watched: dict[str, tuple[Deployment, Mapping[str, float]]] = {}
        self._usage: dict[str, dict[str, float]] = {}  # replica name -> resource -> last value
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Our own metric objects registered in our registry: the runtime's endpoint serves only these.
        self._g = {spec.name: gauge(spec, None) for spec in (
            semconv.KUBE_HPA_CURRENT_REPLICAS, semconv.KUBE_HPA_DESIRED_REPLICAS,
            semconv.KUBE_HPA_MIN_REPLICAS, semconv.KUBE_HPA_MAX_REPLICAS, semconv.KUBE_HPA_CONDITION,
            semconv.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE, semconv.KUBE_HPA_TARGET_METRIC,
            semconv.KUBE_POD_RESOURCE_REQUESTS)}
        self._node = socket.gethostname()
        for g in self._g.values():
            registry.register(g)

    # ----------------------------------------------------------------- set-up

    def add(self, spec: hpa.HPASpec, deployment: Deployment, requests: Mapping[str, float]) -> HPABinding:
        """Autoscale ``deployment`` with ``spec``; ``requests`` are each replica's resource requests."""
        missing = {t.resource for t in spec.metrics} - set(requests)
        if missing:
            raise ValueError(f"{spec.name}: a utilisation target needs a request for {sorted(missing)}")
        binding = HPABinding(spec, deployment, dict(requests))
        with self._lock:
            self._bindings[spec.name] = binding
            self._watched[deployment.name] = (deployment, dict(requests))
        self.publish()
        return binding

    def watch(self, deployment: Deployment, requests: Mapping[str, float]) -> None:
        """Report a deployment's availability and usage without autoscaling it."""
        with self._lock:
            self._watched[deployment.name] = (deployment, dict(requests))
        self.publish()

    def binding(self, name: str) -> HPABinding:
        return self._bindings[name]

    # ----------------------------------------------------------------- the loop

    def start(self) -> None:
        """Run the loop in a background thread: a first sync one period from now, like a new HPA
        whose metrics are already there (the CPU baselines are taken now)."""
        if self._thread is None:
            with self._lock:
                self._sample_all(self.clock())
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hpa-controller", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.config.sync_period):
            try:
                self.sync_once()
            except Exception:  # noqa: BLE001 - one bad pass must not end autoscaling
                log.exception("autoscaler sync failed")

    def sync_once(self) -> None:
        """One pass: sample every replica, then reconcile every HPA and apply its decision."""
        now = self.clock()
        actions = []
        with self._lock:
            samples = self._sample_all(now)
            for binding in self._bindings.values():
                action = self._sync(binding, samples, now)
                if action is not None:
                    actions.append(action)
        # Scale outside the lock: scaling notifies the runtime, whose listener publishes (taking
        # this lock) while a replica's readiness thread may hold the runtime's file lock and be
        # waiting for this one — holding it here deadlocked the runtime as soon as two
        # deployments scaled at once.
        for deployment, replicas in actions:
            deployment.scale(replicas)
        self.publish()

    def _sample_all(self, now: float) -> dict[str, dict[str, hpa.PodMetric]]:
        samples: dict[str, dict[str, hpa.PodMetric]] = {}
        for dep, _ in self._watched.values():
            for r in dep.replicas():
                if r.state != TERMINATING:
                    samples[r.name] = self.sampler.sample(r, now)
        self.sampler.forget(set(samples))
        self._usage = {name: {res: m.value for res, m in s.items()} for name, s in samples.items()}
        return samples

    def _sync(self, b: HPABinding, samples: dict[str, dict[str, hpa.PodMetric]],
              now: float) -> tuple[Deployment, int] | None:
        """Decide for one HPA; the (deployment, replicas) to scale to, applied by the caller."""
        replicas = b.deployment.replicas()
        pods = [_pod(r, b.requests) for r in replicas]
        metrics: dict[str, dict[str, hpa.PodMetric]] = {}
        for r in replicas:
            for resource, sample in samples.get(r.name, {}).items():
                metrics.setdefault(resource, {})[r.name] = sample
        decision, b.state = hpa.reconcile(b.spec, b.state, b.deployment.spec_replicas, pods, metrics, now,
                                          self.config)
        if decision.rescale:
            self._event(b.spec.name, "Normal", "SuccessfulRescale", decision.event or "")
            return b.deployment, decision.desired_replicas
        if decision.warning:
            self._event(b.spec.name, "Warning", "FailedComputeMetricsReplicas", decision.warning)
        return None

    def _event(self, name: str, type_: str, reason: str, message: str) -> None:
        self.events.append({"time": time.time(), "hpa": name, "type": type_, "reason": reason,
                            "message": message})
        (log.info if type_ == "Normal" else log.warning)("hpa/%s %s: %s", name, reason, message)

    # ----------------------------------------------------------------- reporting

    def publish(self) -> None:
        """Set the kube_* gauges from the current state (cheap; called after every change)."""
        ns = self.namespace
        with self._lock:
            for name, b in self._bindings.items():
                labels = {"namespace": ns, "horizontalpodautoscaler": name}
                current = b.state.current_replicas or b.deployment.spec_replicas
                self._g[semconv.KUBE_HPA_CURRENT_REPLICAS.name].labels(**labels).set(current)
                self._g[semconv.KUBE_HPA_DESIRED_REPLICAS.name].labels(**labels).set(
                    b.state.desired_replicas or b.deployment.spec_replicas)
                self._g[semconv.KUBE_HPA_MIN_REPLICAS.name].labels(**labels).set(b.spec.min_replicas)
                self._g[semconv.KUBE_HPA_MAX_REPLICAS.name].labels(**labels).set(b.spec.max_replicas)
                for ctype in hpa.CONDITION_TYPES:
                    cond = b.state.condition(ctype)
                    status = cond.status.lower() if cond else "unknown"
                    for s in _CONDITION_STATUSES:
                        self._g[semconv.KUBE_HPA_CONDITION.name].labels(
                            condition=ctype, status=s, **labels).set(1 if s == status else 0)
                for t in b.spec.metrics:
                    self._g[semconv.KUBE_HPA_TARGET_METRIC.name].labels(
                        metric_name=t.resource, metric_target_type="utilization",
                        **labels).set(t.average_utilization)
            requests_gauge = self._g[semconv.KUBE_POD_RESOURCE_REQUESTS.name]
            requests_gauge.clear()  # replicas come and go: only the live ones keep a series
            for name, (dep, requests) in self._watched.items():
                self._g[semconv.KUBE_DEPLOYMENT_REPLICAS_AVAILABLE.name].labels(
                    namespace=ns, deployment=name).set(dep.available())
                for r in dep.replicas():
                    if r.state == TERMINATING:
                        continue
                    for resource, value in requests.items():
                        requests_gauge.labels(namespace=ns, pod=r.name, uid=f"{r.name}-{r.pid}",
                                              container=name, node=self._node, resource=resource,
                                              unit=_KSM_UNITS.get(resource, resource)).set(value)

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture: deployments with per-replica usage, HPAs, recent events."""
        with self._lock:
            deployments = {name: self._deployment_status(dep, requests)
                           for name, (dep, requests) in self._watched.items()}
            hpas = {name: self._hpa_status(b) for name, b in self._bindings.items()}
            return {"namespace": self.namespace, "sync_period": self.config.sync_period,
                    "deployments": deployments, "hpa": hpas, "events": list(self.events)}

    def _deployment_status(self, dep: Deployment, requests: Mapping[str, float]) -> dict[str, Any]:
        replicas = []
        for r in dep.replicas():
            row = r.as_dict()
            usage = self._usage.get(r.name, {})
            for res, unit in ((hpa.CPU, "cores"), (hpa.MEMORY, "bytes")):
                value = usage.get(res)
                row[f"{res}_{unit}"] = value
                row[f"{res}_percent_of_request"] = (
                    round(100 * value / requests[res], 1)
                    if value is not None and requests.get(res) else None)
            replicas.append(row)
        return {"spec_replicas": dep.spec_replicas, "available": dep.available(), "requests": dict(requests),
                "replicas": replicas}

    def _hpa_status(self, b: HPABinding) -> dict[str, Any]:
        st, now = b.state, self.clock()
        targets = {t.resource: t.average_utilization for t in b.spec.metrics}
        return {
            "min_replicas": b.spec.min_replicas, "max_replicas": b.spec.max_replicas,
            "current_replicas": st.current_replicas or b.deployment.spec_replicas,
            "desired_replicas": st.desired_replicas or b.deployment.spec_replicas,
            "metrics": [{"resource": m.resource, "utilization": m.average_utilization,
                         "target": targets.get(m.resource), "average_value": m.average_value}
                        for m in st.current_metrics],
            "targets": targets,
            "conditions": [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                           for c in st.conditions],
            "seconds_since_last_scale": (None if st.last_scale_time is None
                                         else round(now - st.last_scale_time, 1)),
        }
