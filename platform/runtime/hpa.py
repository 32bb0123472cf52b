"""The Kubernetes HorizontalPodAutoscaler algorithm (autoscaling/v2), as pure functions.

Nothing here sleeps, reads a clock or touches a process: every function takes ``now``
(seconds on any monotonic clock) and returns a new immutable :class:`HPAState`, so the
unit tests replay the Kubernetes documentation's worked examples step by step::

    from ofsre.platform.runtime.hpa import HPASpec, HPAState, Pod, PodMetric, reconcile

    spec = HPASpec("consents", min_replicas=1, max_replicas=10)        # 80 % CPU by default
    pods = [Pod("consents-1", {"cpu": 0.25}), Pod("consents-2", {"cpu": 0.25})]
    usage = {"cpu": {p.name: PodMetric(0.4, timestamp=100.0, window=15.0) for p in pods}}
    decision, state = reconcile(spec, HPAState(), current_replicas=2, pods=pods, metrics=usage, now=100.0)
    decision.desired_replicas      # 4: ceil(2 × 160 % / 80 %)

What is reproduced, following kubernetes/kubernetes ``pkg/controller/podautoscaler``
(``horizontal.go``, ``replica_calculator.go``, ``metrics/utilization.go``) and the defaults
of ``pkg/apis/autoscaling/v2/defaults.go``:

* ``desired = ceil(ready pods × utilisation / target)``; no change while the ratio is within
  the tolerance (0.1) of 1.0. Utilisation is the integer percentage
  ``Σ usage × 100 // Σ requests`` over the pods that have metrics, as Kubernetes computes it.
* Pods that are deleting or failed are ignored; pending pods and (for CPU) pods that are not
  ready, or whose sample started before they became ready during the CPU initialisation
  period, are set aside and count as 0 % on a scale-up. Pods without metrics count as
  ``max(100 %, target)`` on a scale-down and 0 % on a scale-up; if filling them in flips the
  direction or lands within tolerance, nothing changes.
* Several metrics: the largest proposal wins; if some metric fails and the rest would scale
  down, nothing changes (``ScalingActive=False``).
* Behaviour: stabilisation windows (the lowest recommendation of the scale-up window, the
  highest of the scale-down window, seeded with the current size when the HPA is first
  seen), then rate policies per period (``Pods``/``Percent``; ``selectPolicy`` Max, Min or
  Disabled), then min/max clamping — with the ``AbleToScale``, ``ScalingActive`` and
  ``ScalingLimited`` conditions and reasons Kubernetes sets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "CPU", "MEMORY", "ScalingPolicy", "ScalingRules", "DEFAULT_SCALE_UP", "DEFAULT_SCALE_DOWN",
    "ResourceTarget", "HPASpec", "ControllerConfig", "Pod", "PodMetric", "Condition", "MetricStatus",
    "HPAState", "Decision", "MetricsUnavailable", "resource_replicas", "reconcile",
    "ABLE_TO_SCALE", "SCALING_ACTIVE", "SCALING_LIMITED", "CONDITION_TYPES",
]

CPU = "cpu"
MEMORY = "memory"
RESOURCES = (CPU, MEMORY)

ABLE_TO_SCALE = "AbleToScale"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"
CONDITION_TYPES = (ABLE_TO_SCALE, SCALING_ACTIVE, SCALING_LIMITED)

PODS_POLICY = "Pods"
PERCENT_POLICY = "Percent"
SELECT_MAX, SELECT_MIN, SELECT_DISABLED = "Max", "Min", "Disabled"


# --------------------------------------------------------------------------- specification

@dataclass(frozen=True)
class ScalingPolicy:
    """At most ``value`` pods (``Pods``) or ``value`` % (``Percent``) per ``period_seconds``."""

    type: str
    value: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.type not in (PODS_POLICY, PERCENT_POLICY):
            raise ValueError(f"policy type must be {PODS_POLICY!r} or {PERCENT_POLICY!r}, not {self.type!r}")
        if self.value <= 0:
            raise ValueError("policy value must be positive")
        if not 0 < self.period_seconds <= 1800:  # the API server's validation range
            raise ValueError("policy periodSeconds must be in (0, 1800]")


@dataclass(frozen=True)
class ScalingRules:
    """One direction of ``spec.behavior`` (``scaleUp`` or ``scaleDown``)."""

    stabilization_window_seconds: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: str = SELECT_MAX

    def __post_init__(self) -> None:
        if not 0 <= self.stabilization_window_seconds <= 3600:
            raise ValueError("stabilizationWindowSeconds must be in [0, 3600]")
        if self.select_policy not in (SELECT_MAX, SELECT_MIN, SELECT_DISABLED):
            raise ValueError(f"selectPolicy must be Max, Min or Disabled, not {self.select_policy!r}")
        if not self.policies and self.select_policy != SELECT_DISABLED:
            raise ValueError("at least one policy is required unless selectPolicy is Disabled")

    @property
    def longest_period(self) -> float:
        return max((p.period_seconds for p in self.policies), default=0.0)


# pkg/apis/autoscaling/v2/defaults.go: scale up by max(4 pods, 100 %) per 15 s with no
# stabilisation; scale down by 100 % per 15 s after a 300 s stabilisation window.
DEFAULT_SCALE_UP = ScalingRules(0,
                                (ScalingPolicy(PODS_POLICY, 4, 15), ScalingPolicy(PERCENT_POLICY, 100, 15)))
DEFAULT_SCALE_DOWN = ScalingRules(300, (ScalingPolicy(PERCENT_POLICY, 100, 15),))


@dataclass(frozen=True)
class ResourceTarget:
    """A ``type: Resource`` metric with an ``averageUtilization`` target (percent of request)."""

    resource: str
    average_utilization: int

    def __post_init__(self) -> None:
        if self.resource not in RESOURCES:
            raise ValueError(f"resource must be one of {RESOURCES}, not {self.resource!r}")
        if self.average_utilization <= 0:
            raise ValueError("averageUtilization must be positive")


@dataclass(frozen=True)
class HPASpec:
    """``spec`` of one HorizontalPodAutoscaler. Without metrics Kubernetes uses 80 % CPU."""

    name: str
    max_replicas: int
    min_replicas: int = 1
    metrics: tuple[ResourceTarget, ...] = (ResourceTarget(CPU, 80),)
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ValueError("minReplicas must be at least 1 (scale to zero is an alpha feature)")
        if self.max_replicas < self.min_replicas:
            raise ValueError("maxReplicas must not be less than minReplicas")
        if not self.metrics:
            raise ValueError("at least one metric is required")


@dataclass(frozen=True)
class ControllerConfig:
    """kube-controller-manager flags (``--horizontal-pod-autoscaler-*``) with their defaults."""

    sync_period: float = 15.0
    tolerance: float = 0.1
    cpu_initialization_period: float = 300.0
    initial_readiness_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.sync_period <= 0:
            raise ValueError("sync period must be positive")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be in [0, 1)")


# --------------------------------------------------------------------------- observations

@dataclass(frozen=True)
class Pod:
    """What the controller knows about one pod (here: one replica process).

    ``requests`` maps a resource to its request (cores for CPU, bytes for memory).
    ``ready_transition_time`` is when the Ready condition last changed; ``None`` when the
    pod has no Ready condition yet.
    """

    name: str
    requests: Mapping[str, float]
    phase: str = "Running"  # Pending | Running | Failed
    ready: bool = True
    start_time: float | None = 0.0
    ready_transition_time: float | None = 0.0
    deleting: bool = False


@dataclass(frozen=True)
class PodMetric:
    """One usage sample: ``value`` averaged over ``[timestamp - window, timestamp]``."""

    value: float
    timestamp: float
    window: float


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class MetricStatus:
    """``status.currentMetrics[]``: the raw average before any missing/unready adjustment."""

    resource: str
    average_utilization: int  # percent of request
    average_value: float      # cores or bytes per pod


@dataclass(frozen=True)
class HPAState:
    """Everything the controller remembers between syncs, plus the published status."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (timestamp, unstabilised recommendation)
    scale_up_events: tuple[tuple[float, int], ...] = ()  # (timestamp, pods added)
    scale_down_events: tuple[tuple[float, int], ...] = ()  # (timestamp, pods removed)
    conditions: tuple[Condition, ...] = ()
    current_replicas: int = 0
    desired_replicas: int = 0
    current_metrics: tuple[MetricStatus, ...] = ()
    last_scale_time: float | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class Decision:
    """The outcome of one sync: the size to set and, when it changes, the event message."""

    desired_replicas: int
    rescale: bool
    reason: str = ""
    event: str | None = None    # "SuccessfulRescale" message
    warning: str | None = None  # "FailedComputeMetricsReplicas" message


class MetricsUnavailable(Exception):
    """No usable metric for a resource: the controller sets ``ScalingActive=False``."""

    def __init__(self, message: str, reason: str = "FailedGetResourceMetric"):
        super().__init__(message)
        self.reason = reason


@dataclass
class _Conditions:
    """The conditions being rebuilt during one sync (insertion order kept for display)."""

    items: dict[str, Condition] = field(default_factory=dict)

    def set(self, type_: str, status: bool, reason: str, message: str) -> None:
        self.items[type_] = Condition(type_, "True" if status else "False", reason, message)

    def frozen(self) -> tuple[Condition, ...]:
        return tuple(self.items[t] for t in CONDITION_TYPES if t in self.items)


# --------------------------------------------------------------------------- replica calculator

def _milli(value: float) -> int:
    # Kubernetes computes with MilliValue() integers; doing the same keeps the integer
    # truncation of the utilisation percentage identical.
    return int(round(value * 1000))


def _utilization_ratio(usage: Mapping[str, float], requests: Mapping[str, float],
                       target: int) -> tuple[float, int, float]:
    """(utilisation / target, utilisation %, raw average) as ``GetResourceUtilizationRatio``."""
    names = [n for n in usage if n in requests]
    total_usage = sum(_milli(usage[n]) for n in names)
    total_requests = sum(_milli(requests[n]) for n in names)
    if total_requests == 0:
        raise MetricsUnavailable("no metrics returned matched known pods")
    utilization = total_usage * 100 // total_requests
    return utilization / target, utilization, total_usage / len(names) / 1000


def _group_pods(pods: Sequence[Pod], metrics: Mapping[str, PodMetric], resource: str,
                config: ControllerConfig, now: float) -> tuple[int, set[str], set[str], set[str]]:
    """(ready count, unready, missing, ignored) as ``groupPods`` in replica_calculator.go."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if resource == CPU and _cpu_sample_unready(pod, metric, config, now):
            unready.add(pod.name)
            continue
        ready += 1
    return ready, unready, missing, ignored


def _cpu_sample_unready(pod: Pod, metric: PodMetric, config: ControllerConfig, now: float) -> bool:
    # CPU right after start is dominated by initialisation, so such samples are set aside.
    if pod.ready_transition_time is None or pod.start_time is None:
        return True
    if pod.start_time + config.cpu_initialization_period > now:
        # Still initialising: unready, or the sample's window began before the pod became ready.
        return not pod.ready or metric.timestamp < pod.ready_transition_time + metric.window
    # Past initialisation: only a pod that is unready and has never been ready is set aside.
    return not pod.ready and pod.start_time + config.initial_readiness_delay > pod.ready_transition_time


def _within(ratio: float, tolerance: float) -> bool:
    return abs(1.0 - ratio) <= tolerance


def resource_replicas(current_replicas: int, target: ResourceTarget, pods: Sequence[Pod],
                      metrics: Mapping[str, PodMetric], *, now: float,
                      config: ControllerConfig = ControllerConfig()) -> tuple[int, MetricStatus]:
    """The replica proposal for one resource metric (``GetResourceReplicas``).

    Raises :class:`MetricsUnavailable` when no pod, request or sample can be used.
    """
    if not pods:
        raise MetricsUnavailable("no pods returned by selector while calculating replica count")
    resource = target.resource
    ready_count, unready, missing, ignored = _group_pods(pods, metrics, resource, config, now)
    requests: dict[str, float] = {}
    for pod in pods:
        if resource not in pod.requests:
            raise MetricsUnavailable(f"missing request for {resource} in pod {pod.name}")
        requests[pod.name] = pod.requests[resource]
    known = {p.name for p in pods}
    usage = {n: m.value for n, m in metrics.items() if n in known and n not in unready and n not in ignored}
    if not usage:
        raise MetricsUnavailable("did not receive metrics for targeted pods (pods might be unready)")

    ratio, utilization, raw = _utilization_ratio(usage, requests, target.average_utilization)
    status = MetricStatus(resource, utilization, raw)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if _within(ratio, config.tolerance):
            return current_replicas, status
        return math.ceil(ratio * ready_count), status

    if missing:
        if ratio < 1.0:  # scale-down: a pod we cannot see is assumed busy
            fallback = max(100, target.average_utilization) / 100
            usage.update({n: requests[n] * fallback for n in missing})
        elif ratio > 1.0:  # scale-up: assumed idle
            usage.update({n: 0.0 for n in missing})
    if scale_up_with_unready:
        usage.update({n: 0.0 for n in unready})

    new_ratio, _, _ = _utilization_ratio(usage, requests, target.average_utilization)
    if _within(new_ratio, config.tolerance) or (ratio > 1.0 > new_ratio) or (ratio < 1.0 < new_ratio):
        return current_replicas, status  # too small a change, or the direction flipped
    proposal = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and proposal > current_replicas) or (new_ratio > 1.0 and proposal < current_replicas):
        return current_replicas, status
    return proposal, status


# --------------------------------------------------------------------------- behaviour

def _change_in_period(period: float, events: Sequence[tuple[float, int]], now: float) -> int:
    cutoff = now - period
    return sum(change for ts, change in events if ts > cutoff)


def _period_starts(current: int, state: HPAState, rules: ScalingRules,
                   now: float) -> list[tuple[ScalingPolicy, int]]:
    """Each policy with the size the deployment had when its period began."""
    return [(p, current - _change_in_period(p.period_seconds, state.scale_up_events, now)
             + _change_in_period(p.period_seconds, state.scale_down_events, now)) for p in rules.policies]


def _scale_up_limit(current: int, state: HPAState, rules: ScalingRules, now: float) -> int:
    if rules.select_policy == SELECT_DISABLED:
        return current
    # Percent rounds up, or a small percentage of a small deployment would never add a pod.
    proposals = [start + p.value if p.type == PODS_POLICY else math.ceil(start * (1 + p.value / 100))
                 for p, start in _period_starts(current, state, rules, now)]
    return min(proposals) if rules.select_policy == SELECT_MIN else max(proposals)


def _scale_down_limit(current: int, state: HPAState, rules: ScalingRules, now: float) -> int:
    if rules.select_policy == SELECT_DISABLED:
        return current
    proposals = [start - p.value if p.type == PODS_POLICY else int(start * (1 - p.value / 100))
                 for p, start in _period_starts(current, state, rules, now)]
    # "Max" means the largest change, which for a scale-down is the smallest size.
    return max(proposals) if rules.select_policy == SELECT_MIN else min(proposals)


def _stabilize(spec: HPASpec, recommendations: tuple[tuple[float, int], ...], current: int, desired: int,
               now: float) -> tuple[int, str, str, tuple[tuple[float, int], ...]]:
    """``stabilizeRecommendationWithBehaviors``: clamp to the window's lowest/highest advice."""
    up_cutoff = now - spec.scale_up.stabilization_window_seconds
    down_cutoff = now - spec.scale_down.stabilization_window_seconds
    up_recommendation = down_recommendation = desired
    for ts, rec in recommendations:
        if ts > up_cutoff:
            up_recommendation = min(rec, up_recommendation)
        if ts > down_cutoff:
            down_recommendation = max(rec, down_recommendation)
    stabilized = min(max(current, up_recommendation), down_recommendation)
    # Samples older than both windows can never matter again; drop them (Kubernetes overwrites them).
    kept = tuple(r for r in recommendations if r[0] > min(up_cutoff, down_cutoff))
    if desired >= current:
        reason, message = ("ScaleUpStabilized", "recent recommendations were lower than current one, "
                           "applying the lowest recent recommendation")
    else:
        reason, message = ("ScaleDownStabilized", "recent recommendations were higher than current one, "
                           "applying the highest recent recommendation")
    return stabilized, reason, message, kept + ((now, desired),)


def _limit_rate(spec: HPASpec, state: HPAState, current: int, desired: int,
                now: float) -> tuple[int, str, str]:
    """``convertDesiredReplicasWithBehaviorRate``: apply scaling policies and min/max."""
    if desired > current:
        limit = max(_scale_up_limit(current, state, spec.scale_up, now), current)
        if spec.max_replicas > limit:
            allowed, reason, message = limit, "ScaleUpLimit", \
                "the desired replica count is increasing faster than the maximum scale rate"
        else:
            allowed, reason, message = spec.max_replicas, "TooManyReplicas", \
                "the desired replica count is more than the maximum replica count"
        if desired > allowed:
            return allowed, reason, message
    elif desired < current:
        limit = min(_scale_down_limit(current, state, spec.scale_down, now), current)
        if spec.min_replicas < limit:
            allowed, reason, message = limit, "ScaleDownLimit", \
                "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            allowed, reason, message = spec.min_replicas, "TooFewReplicas", \
                "the desired replica count is less than the minimum replica count"
        if desired < allowed:
            return allowed, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def _store_scale_event(spec: HPASpec, state: HPAState, previous: int, new: int, now: float) -> HPAState:
    if new > previous:
        cutoff = now - spec.scale_up.longest_period
        events = tuple(e for e in state.scale_up_events if e[0] > cutoff) + ((now, new - previous),)
        return replace(state, scale_up_events=events)
    cutoff = now - spec.scale_down.longest_period
    events = tuple(e for e in state.scale_down_events if e[0] > cutoff) + ((now, previous - new),)
    return replace(state, scale_down_events=events)


# --------------------------------------------------------------------------- one sync

def _metric_label(resource: str) -> str:
    return f"{resource} resource utilization (percentage of request)"


def _compute_metrics(spec: HPASpec, current: int, pods: Sequence[Pod],
                     metrics: Mapping[str, Mapping[str, PodMetric]], config: ControllerConfig, now: float,
                     conditions: _Conditions) -> tuple[int, str, tuple[MetricStatus, ...]]:
    """``computeReplicasForMetrics``: the largest proposal; raises when no metric is usable."""
    best, best_name, statuses = 0, "", []
    first_error: MetricsUnavailable | None = None
    message = ""
    invalid = 0
    for target in spec.metrics:
        try:
            proposal, status = resource_replicas(current, target, pods, metrics.get(target.resource, {}),
                                                 now=now, config=config)
        except MetricsUnavailable as exc:
            invalid += 1
            if first_error is None:
                first_error, message = exc, f"failed to get {target.resource} utilization: {exc}"
            continue
        statuses.append(status)
        if best == 0 or proposal > best:
            best, best_name = proposal, _metric_label(target.resource)
    if first_error is not None and (invalid >= len(spec.metrics) or best < current):
        conditions.set(SCALING_ACTIVE, False, first_error.reason,
                       f"the HPA was unable to compute the replica count: {message}")
        raise MetricsUnavailable(
            f"invalid metrics ({invalid} invalid out of {len(spec.metrics)}), first error is: {message}",
            first_error.reason)
    conditions.set(SCALING_ACTIVE, True, "ValidMetricFound",
                   f"the HPA was able to successfully calculate a replica count from {best_name}")
    return best, best_name, tuple(statuses)


def reconcile(spec: HPASpec, state: HPAState, current_replicas: int, pods: Sequence[Pod],
              metrics: Mapping[str, Mapping[str, PodMetric]], now: float,
              config: ControllerConfig = ControllerConfig()) -> tuple[Decision, HPAState]:
    """One controller sync (``reconcileAutoscaler``): the new size and the new state.

    ``current_replicas`` is the target's ``spec.replicas``; ``pods`` the pods it owns now
    (starting and terminating ones included); ``metrics`` maps resource → pod name → sample.
    The caller applies ``decision.desired_replicas`` when ``decision.rescale`` is true.
    """
    conditions = _Conditions(dict((c.type, c) for c in state.conditions))
    conditions.set(ABLE_TO_SCALE, True, "SucceededGetScale",
                   "the HPA controller was able to get the target's current scale")
    if not state.recommendations:  # recordInitialRecommendation: no scale-down straight after start
        state = replace(state, recommendations=((now, current_replicas),))
    statuses: tuple[MetricStatus, ...] = state.current_metrics
    desired, reason, rescale = 0, "", True

    if current_replicas == 0:
        rescale = False
        conditions.set(SCALING_ACTIVE, False, "ScalingDisabled",
                       "scaling is disabled since the replica count of the target is zero")
    elif current_replicas > spec.max_replicas:
        desired, reason = spec.max_replicas, "Current number of replicas above Spec.MaxReplicas"
    elif current_replicas < spec.min_replicas:
        desired, reason = spec.min_replicas, "Current number of replicas below Spec.MinReplicas"
    else:
        try:
            proposal, metric_name, statuses = _compute_metrics(spec, current_replicas, pods, metrics, config,
                                                               now, conditions)
        except MetricsUnavailable as exc:
            new_state = replace(state, conditions=conditions.frozen(), current_replicas=current_replicas,
                                desired_replicas=state.desired_replicas or current_replicas)
            return Decision(current_replicas, False, warning=str(exc)), new_state
        desired = proposal
        if desired > current_replicas:
            reason = f"{metric_name} above target"
        elif desired < current_replicas:
            reason = "All metrics below target"
        stabilized, stab_reason, stab_message, recs = _stabilize(spec, state.recommendations,
                                                                  current_replicas, desired, now)
        state = replace(state, recommendations=recs)
        if stabilized != desired:
            conditions.set(ABLE_TO_SCALE, True, stab_reason, stab_message)
        else:
            conditions.set(ABLE_TO_SCALE, True, "ReadyForNewScale", "recommended size matches current size")
        desired, limit_reason, limit_message = _limit_rate(spec, state, current_replicas, stabilized, now)
        conditions.set(SCALING_LIMITED, desired != stabilized, limit_reason, limit_message)
        rescale = desired != current_replicas

    event = None
    if rescale:
        conditions.set(ABLE_TO_SCALE, True, "SucceededRescale",
                       f"the HPA controller was able to update the target scale to {desired}")
        event = f"New size: {desired}; reason: {reason}"
        state = _store_scale_event(spec, state, current_replicas, desired, now)
        state = replace(state, last_scale_time=now)
    else:
        desired = current_replicas
    new_state = replace(state, conditions=conditions.frozen(), current_replicas=current_replicas,
                        desired_replicas=desired, current_metrics=statuses)
    return Decision(desired, rescale, reason, event), new_state
