"""The HPA algorithm against the Kubernetes documentation's worked examples.

Sources: kubernetes.io "Horizontal Pod Autoscaling" (algorithm details, scaling policies,
stabilization window, default behavior) and kubernetes/kubernetes
pkg/controller/podautoscaler (replica_calculator.go, horizontal.go). Pure functions over
an explicit clock: no sleeps, no processes.
"""

from __future__ import annotations

import pytest

from ofsre.platform.runtime.hpa import (
    ABLE_TO_SCALE,
    CPU,
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    MEMORY,
    SCALING_ACTIVE,
    SCALING_LIMITED,
    ControllerConfig,
    HPASpec,
    HPAState,
    MetricsUnavailable,
    Pod,
    PodMetric,
    ResourceTarget,
    ScalingPolicy,
    ScalingRules,
    reconcile,
    resource_replicas,
)

REQ = 0.1  # 100m CPU request per pod
MIB = 1024 * 1024
NOW = 10_000.0  # long after every pod started, so no CPU initialisation rules apply
CPU50 = ResourceTarget(CPU, 50)


def pods(n: int, prefix: str = "p", **kw) -> list[Pod]:
    kw.setdefault("start_time", -1e6)  # long-running pods unless a test says otherwise
    kw.setdefault("ready_transition_time", -1e6 + 1)
    return [Pod(f"{prefix}{i}", {CPU: REQ, MEMORY: 256 * MIB}, **kw) for i in range(n)]


def cpu_usage(pod_list, percent: float, now: float = NOW) -> dict[str, PodMetric]:
    """Each pod using ``percent`` of its CPU request, sampled over the last 15 s."""
    return {p.name: PodMetric(REQ * percent / 100, now, 15.0) for p in pod_list}


def replicas(current, target, pod_list, metrics, now=NOW, **cfg):
    return resource_replicas(current, target, pod_list, metrics, now=now, config=ControllerConfig(**cfg))[0]


# ---------------------------------------------------------------- desired = ceil(current × metric / target)

def test_usage_twice_the_target_doubles_the_replicas():
    # docs: "if the current metric value is 200m, and the desired value is 100m, the number of replicas will
    # be doubled"
    ps = pods(3)
    assert replicas(3, ResourceTarget(CPU, 100), ps, cpu_usage(ps, 200)) == 6


def test_usage_half_the_target_halves_the_replicas():
    # docs: "If the current value is instead 50m, you'll halve the number of replicas"
    ps = pods(4)
    assert replicas(4, ResourceTarget(CPU, 100), ps, cpu_usage(ps, 50)) == 2


def test_result_is_rounded_up():
    ps = pods(3)
    assert replicas(3, CPU50, ps, cpu_usage(ps, 70)) == 5  # ceil(3 × 1.4) = ceil(4.2)


def test_no_change_within_tolerance_and_change_outside_it():
    ps = pods(10)
    assert replicas(10, CPU50, ps, cpu_usage(ps, 46)) == 10  # ratio 0.92: within 0.1
    assert replicas(10, CPU50, ps, cpu_usage(ps, 54)) == 10  # ratio 1.08
    assert replicas(10, CPU50, ps, cpu_usage(ps, 42)) == 9  # ratio 0.84: ceil(8.4)
    assert replicas(10, CPU50, ps, cpu_usage(ps, 58)) == 12  # ratio 1.16: ceil(11.6)
    # The tolerance is a controller flag: with 0.2, ratio 1.16 is "close enough".
    assert replicas(10, CPU50, ps, cpu_usage(ps, 58), tolerance=0.2) == 10


def test_utilisation_is_the_integer_percentage_of_summed_requests():
    ps = pods(2)
    usage = {"p0": PodMetric(0.0493, NOW, 15), "p1": PodMetric(0.0, NOW, 15)}
    _, status = resource_replicas(2, CPU50, ps, usage, now=NOW)
    assert status.average_utilization == 24  # 49m × 100 // 200m, truncated like Kubernetes
    assert status.average_value == pytest.approx(0.0245)


# ---------------------------------------------------------------- pods without metrics

def test_missing_pods_count_as_full_request_on_scale_down():
    # 3 pods at 10 % of request, 1 without metrics, target 50 %: the missing pod is assumed
    # to use 100 % so the scale-down is damped: (3×10 + 100) / 4 = 32 % → ceil(4 × 0.64) = 3.
    ps = pods(4)
    metrics = cpu_usage(ps[:3], 10)
    assert replicas(4, CPU50, ps, metrics) == 3
    assert replicas(3, CPU50, ps[:3], metrics) == 1  # without that pod: ceil(3 × 0.2)


def test_missing_pods_count_as_zero_on_scale_up_and_can_cancel_it():
    # 3 pods at 60 % (ratio 1.2) and 1 without metrics counted as 0 %: (180) / 4 = 45 %, ratio 0.9:
    # the direction flips, so nothing changes.
    ps = pods(4)
    assert replicas(4, CPU50, ps, cpu_usage(ps[:3], 60)) == 4
    assert replicas(3, CPU50, ps[:3], cpu_usage(ps[:3], 60)) == 4  # all reporting: ceil(3 × 1.2)


def test_missing_pods_use_the_target_when_it_is_above_100_percent():
    ps = pods(2)
    # 1 pod at 50 %, 1 missing, target 150 %: the missing one counts as 150 % → (50+150)/2 = 100 % → ratio .67
    assert replicas(2, ResourceTarget(CPU, 150), ps, cpu_usage(ps[:1], 50)) == 2  # ceil(1.33)


# ---------------------------------------------------------------- not-ready pods (CPU)

def test_unready_pods_count_as_zero_on_scale_up():
    ready = pods(3)
    starting = pods(2, prefix="s", ready=False, start_time=NOW - 5, ready_transition_time=NOW - 5)
    # ready pods at 60 % (ratio 1.2) + 2 unready at 0 %: 180/5 = 36 % → direction flips → no change.
    metrics = cpu_usage(ready, 60) | cpu_usage(starting, 300)
    assert replicas(5, CPU50, ready + starting, metrics) == 5
    # Ready pods at 200 %: (600 + 0) / 5 = 120 % → ratio 2.4 → ceil(12) replicas.
    metrics = cpu_usage(ready, 200) | cpu_usage(starting, 300)
    assert replicas(5, CPU50, ready + starting, metrics) == 12


def test_unready_pods_are_left_out_of_a_scale_down():
    ready = pods(2)
    starting = pods(1, prefix="s", ready=False, start_time=NOW - 5, ready_transition_time=NOW - 5)
    metrics = cpu_usage(ready, 10) | cpu_usage(starting, 400)
    assert replicas(3, CPU50, ready + starting, metrics) == 1  # ceil(2 × 0.2): the starting pod is set aside


def test_cpu_sample_taken_before_readiness_is_set_aside_during_initialisation():
    old = pods(1)
    # Started 20 s ago, ready 10 s ago: a 15 s sample ending now began before it was ready.
    young = Pod("y", {CPU: REQ}, start_time=NOW - 20, ready_transition_time=NOW - 10)
    metrics = cpu_usage(old, 100) | {"y": PodMetric(REQ * 5, NOW, 15.0)}
    _, status = resource_replicas(2, CPU50, old + [young], metrics, now=NOW)
    assert status.average_utilization == 100  # only the old pod counts
    # A sample whose whole window is after readiness counts.
    metrics["y"] = PodMetric(REQ * 3, NOW, 5.0)
    _, status = resource_replicas(2, CPU50, old + [young], metrics, now=NOW)
    assert status.average_utilization == 200


def test_readiness_rules_do_not_apply_to_memory():
    ps = pods(1) + pods(1, prefix="s", ready=False, start_time=NOW - 5, ready_transition_time=NOW - 5)
    metrics = {p.name: PodMetric(128 * MIB, NOW, 15) for p in ps}
    _, status = resource_replicas(2, ResourceTarget(MEMORY, 80), ps, metrics, now=NOW)
    assert status.average_utilization == 50


def test_deleting_and_failed_pods_are_ignored():
    ps = pods(2) + pods(1, prefix="d", deleting=True) + pods(1, prefix="f", phase="Failed")
    metrics = cpu_usage(ps, 100)
    metrics["d0"] = PodMetric(REQ * 50, NOW, 15)  # would dominate if counted
    assert replicas(4, CPU50, ps, metrics) == 4  # ceil(2 ready × 2.0)


def test_no_usable_metric_raises():
    ps = pods(2, ready=False, start_time=NOW - 5, ready_transition_time=NOW - 5)
    with pytest.raises(MetricsUnavailable, match="might be unready"):
        resource_replicas(2, CPU50, ps, cpu_usage(ps, 100), now=NOW)
    with pytest.raises(MetricsUnavailable, match="no pods"):
        resource_replicas(2, CPU50, [], {}, now=NOW)
    no_request = [Pod("x", {MEMORY: 1.0})]
    with pytest.raises(MetricsUnavailable, match="missing request for cpu"):
        resource_replicas(1, CPU50, no_request, {"x": PodMetric(1, NOW, 15)}, now=NOW)


# ---------------------------------------------------------------- one sync: metrics, behaviour, conditions

def spec(**kw) -> HPASpec:
    kw.setdefault("max_replicas", 100)
    kw.setdefault("metrics", (CPU50,))
    return HPASpec("api", **kw)


def sync(s: HPASpec, state: HPAState, current: int, percent: float, now: float, *, memory_percent=None):
    ps = pods(current)
    metrics = {CPU: cpu_usage(ps, percent, now)}
    if memory_percent is not None:
        metrics[MEMORY] = {p.name: PodMetric(256 * MIB * memory_percent / 100, now, 15) for p in ps}
    return reconcile(s, state, current, ps, metrics, now)


def cond(state: HPAState, type_: str) -> tuple[str, str]:
    c = state.condition(type_)
    return (c.status, c.reason)


def test_several_metrics_the_largest_proposal_wins():
    s = spec(metrics=(CPU50, ResourceTarget(MEMORY, 50)))
    decision, state = sync(s, HPAState(), 2, 75, 0.0, memory_percent=150)  # cpu → 3, memory → 6
    assert decision.desired_replicas == 6
    assert decision.event == ("New size: 6; reason: memory resource utilization (percentage of "
                              "request) above target")
    assert cond(state, SCALING_ACTIVE) == ("True", "ValidMetricFound")
    assert [m.resource for m in state.current_metrics] == [CPU, MEMORY]


def test_default_scale_up_policy_is_max_of_4_pods_and_100_percent_per_15_s():
    s = spec()
    # From 1 replica at 1000 % of target the recommendation is 20, but policies allow max(1+4, 1×2) = 5.
    decision, state = sync(s, HPAState(), 1, 1000, 0.0)
    assert decision.desired_replicas == 5
    assert cond(state, SCALING_LIMITED) == ("True", "ScaleUpLimit")
    # Still inside the same 15 s period: the 4 pods just added use the budget up.
    decision, state = sync(s, state, 5, 1000, 10.0)
    assert (decision.rescale, decision.desired_replicas) == (False, 5)
    # A new period: max(5+4, 5×2) = 10.
    decision, state = sync(s, state, 5, 1000, 15.0)
    assert decision.desired_replicas == 10
    # Past 4 replicas the percentage policy allows more than 4 pods: 10 → 20.
    decision, state = sync(s, state, 10, 1000, 30.0)
    assert decision.desired_replicas == 20


def test_select_policy_min_takes_the_smaller_change():
    up = ScalingRules(0, DEFAULT_SCALE_UP.policies, "Min")
    decision, _ = sync(spec(scale_up=up), HPAState(), 1, 1000, 0.0)
    assert decision.desired_replicas == 2  # min(1+4, 1×2)


def test_docs_example_percent_900_grows_tenfold_per_period():
    # docs: "scaleUp: policies: - type: Percent value: 900 ..." — 1 → 10 → 100
    up = ScalingRules(0, (ScalingPolicy("Percent", 900, 60),))
    s = spec(scale_up=up, max_replicas=1000)
    decision, state = sync(s, HPAState(), 1, 100_000, 0.0)
    assert decision.desired_replicas == 10
    decision, state = sync(s, state, 10, 100_000, 61.0)
    assert decision.desired_replicas == 100


def test_docs_example_scale_down_pods_4_or_10_percent_per_minute():
    # docs: with policies Pods 4/60 s and Percent 10/60 s (selectPolicy Max) at 80 replicas the
    # percent policy removes 8; at 72 it removes 8 again (int(72 × 0.9) = 64); small deployments lose 4.
    down = ScalingRules(0, (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)))
    s = spec(scale_down=down)
    decision, state = sync(s, HPAState(), 80, 1, 0.0)
    assert decision.desired_replicas == 72
    assert cond(state, SCALING_LIMITED) == ("True", "ScaleDownLimit")
    decision, state = sync(s, state, 72, 1, 30.0)  # same minute: no further scale-down
    assert decision.rescale is False
    decision, state = sync(s, state, 72, 1, 61.0)
    assert decision.desired_replicas == 64
    decision, _ = sync(s, HPAState(), 30, 1, 0.0)
    assert decision.desired_replicas == 26  # min(30-4, int(27)) → the bigger change is 4 pods


def test_scale_down_waits_for_the_300_s_stabilisation_window():
    s = spec()  # default behaviour
    assert s.scale_down == DEFAULT_SCALE_DOWN
    state, first_down = HPAState(), None
    current = 4
    for t in range(0, 400, 15):  # load dropped to 10 % of target at t=0; one sync every 15 s
        decision, state = sync(s, state, current, 5, float(t))
        if decision.rescale:
            first_down, current = t, decision.desired_replicas
            break
        assert cond(state, ABLE_TO_SCALE) == ("True", "ScaleDownStabilized")
    # The size seen at t=0 is the first recommendation; it leaves the window exactly 300 s later.
    assert first_down == 300
    assert current == 1  # 100 % per 15 s may remove everything; minReplicas keeps 1


def test_stabilisation_applies_the_highest_recommendation_in_the_window():
    down = ScalingRules(60, DEFAULT_SCALE_DOWN.policies)
    s = spec(scale_down=down)
    state = HPAState()
    # recommendations: 10 (t=0, the size when first seen), then ceil(10 × .6)=6 at t=5,
    # ceil(10 × .4)=4 at t=20 and ceil(10 × .2)=2 at t=40
    _, state = sync(s, state, 10, 50, 0.0)  # at target: recommendation 10
    _, state = sync(s, state, 10, 30, 5.0)
    _, state = sync(s, state, 10, 20, 20.0)
    decision, state = sync(s, state, 10, 10, 40.0)
    assert decision.rescale is False  # the t=0 recommendation (10) is still in the 60 s window
    decision, state = sync(s, state, 10, 10, 61.0)  # t=0 left the window; the highest left is 6
    assert decision.desired_replicas == 6
    assert cond(state, ABLE_TO_SCALE) == ("True", "SucceededRescale")


def test_scale_up_stabilisation_applies_the_lowest_recommendation():
    up = ScalingRules(60, DEFAULT_SCALE_UP.policies)
    s = spec(scale_up=up)
    _, state = sync(s, HPAState(), 2, 50, 0.0)  # recommendation 2
    decision, state = sync(s, state, 2, 150, 15.0)  # recommendation 6, but 2 is in the window
    assert decision.rescale is False
    assert cond(state, ABLE_TO_SCALE) == ("True", "ScaleUpStabilized")


def test_min_and_max_clamp_with_too_many_and_too_few_replicas():
    s = spec(min_replicas=2, max_replicas=6, scale_down=ScalingRules(0, DEFAULT_SCALE_DOWN.policies))
    decision, state = sync(s, HPAState(), 4, 1000, 0.0)
    assert decision.desired_replicas == 6
    assert cond(state, SCALING_LIMITED) == ("True", "TooManyReplicas")
    decision, state = sync(s, HPAState(), 4, 1, 0.0)
    assert decision.desired_replicas == 2
    assert cond(state, SCALING_LIMITED) == ("True", "TooFewReplicas")
    decision, state = sync(s, HPAState(), 4, 40, 0.0)  # ceil(4 × .8) = 4: within range
    assert cond(state, SCALING_LIMITED) == ("False", "DesiredWithinRange")


def test_current_size_outside_min_max_is_corrected_first():
    s = spec(min_replicas=2, max_replicas=5)
    decision, _ = sync(s, HPAState(), 8, 50, 0.0)
    assert (decision.desired_replicas, decision.reason) == (5,
                                                            "Current number of replicas above "
                                                            "Spec.MaxReplicas")
    decision, _ = sync(s, HPAState(), 1, 50, 0.0)
    assert (decision.desired_replicas, decision.reason) == (2,
                                                            "Current number of replicas below "
                                                            "Spec.MinReplicas")


def test_disabled_scale_down_never_removes_pods():
    s = spec(scale_down=ScalingRules(0, (), "Disabled"))
    decision, state = sync(s, HPAState(), 5, 1, 0.0)
    assert decision.rescale is False
    assert cond(state, SCALING_LIMITED) == ("True", "ScaleDownLimit")


def test_metrics_failure_sets_scaling_active_false_and_keeps_the_size():
    s = spec()
    ps = pods(3)
    decision, state = reconcile(s, HPAState(), 3, ps, {}, 0.0)
    assert (decision.rescale, decision.desired_replicas) == (False, 3)
    assert "invalid metrics (1 invalid out of 1)" in decision.warning
    assert cond(state, SCALING_ACTIVE) == ("False", "FailedGetResourceMetric")


def test_one_failing_metric_blocks_a_scale_down_but_not_a_scale_up():
    s = spec(metrics=(CPU50, ResourceTarget(MEMORY, 50)),
             scale_down=ScalingRules(0, DEFAULT_SCALE_DOWN.policies))
    ps = pods(4)
    decision, _ = reconcile(s, HPAState(), 4, ps, {CPU: cpu_usage(ps, 5)}, 0.0)  # memory missing
    assert decision.rescale is False
    decision, _ = reconcile(s, HPAState(), 4, ps, {CPU: cpu_usage(ps, 100)}, 0.0)
    assert decision.desired_replicas == 8


def test_default_spec_matches_kubernetes_defaults():
    s = HPASpec("x", max_replicas=3)
    assert s.min_replicas == 1 and s.metrics == (ResourceTarget(CPU, 80),)
    policies = [(p.type, p.value, p.period_seconds) for p in s.scale_up.policies]
    assert policies == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert s.scale_up.stabilization_window_seconds == 0 and s.scale_up.select_policy == "Max"
    assert s.scale_down.stabilization_window_seconds == 300
    assert [(p.type, p.value, p.period_seconds) for p in s.scale_down.policies] == [("Percent", 100, 15)]
    c = ControllerConfig()
    assert (c.sync_period, c.tolerance) == (15.0, 0.1)


@pytest.mark.parametrize("bad", [
    lambda: HPASpec("x", max_replicas=1, min_replicas=2),
    lambda: HPASpec("x", max_replicas=1, min_replicas=0),
    lambda: ScalingPolicy("Pods", 1, 1801),
    lambda: ScalingPolicy("Nodes", 1, 15),
    lambda: ScalingRules(3601, DEFAULT_SCALE_UP.policies),
    lambda: ResourceTarget("gpu", 50),
])
def test_invalid_specs_fail_fast(bad):
    with pytest.raises(ValueError):
        bad()
