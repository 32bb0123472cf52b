"""The verdict's rules on made-up timelines (the e2e tests drive real processes)."""

from __future__ import annotations

from ofsre.loadtests.verdict import Bounds, gate, judge

T0 = 1_800_000_000.0
BALANCES = "GET /open-banking/accounts/v2/accounts/{accountId}/balances"


def svc(current, ready, cpu, *, lo=1, hi=4, desired=None, limited=False):
    return {"current": current, "desired": desired or current, "ready": ready, "min": lo, "max": hi,
            "utilization": {"cpu": cpu}, "targets": {"cpu": 80}, "limited": limited}


def timeline(states):
    """states: list of (seconds, service dict) for 'accounts'."""
    return [{"t": T0 + t, "services": {"accounts": s}} for t, s in states]


def rows(seconds, rps=10.0, fails=0.0, p95=200.0):
    return [{"t": T0 + t, "users": 5, "rps": rps, "fails_per_s": fails, "p95_ms": p95,
             "routes": {BALANCES: {"rps": rps, "fails_per_s": fails, "p95_ms": p95}}} for t in seconds]


def rescale(t, size, up=True):
    reason = "above target" if up else "All metrics below target"
    return {"t": T0 + t, "service": "accounts", "reason": "SuccessfulRescale",
            "message": f"New size: {size}; reason: cpu resource utilization (percentage of request) {reason}"}


SCALE_UP_AND_DOWN = timeline([(0, svc(1, 1, 40)), (10, svc(1, 1, 190)), (12, svc(3, 1, 190)),
                              (20, svc(3, 3, 70)),
                              (40, svc(3, 3, 20)), (50, svc(1, 1, 30)), (60, svc(1, 1, 30))])
EVENTS = [rescale(11, 3), rescale(45, 1, up=False)]


def test_a_timely_scale_up_and_down_passes_with_numbers():
    v = judge(SCALE_UP_AND_DOWN, EVENTS, rows(range(0, 61)), bounds=Bounds(expect_scale=("accounts",)))
    assert v.passed, v.table()
    checks = {c.name: c for c in v.checks}
    assert checks["reaction"].value == 1.0  # utilisation seen above target at 10 s, decision at 11 s
    assert checks["time to ready"].value == 10.0
    # ceil(1×190/80)
    assert checks["replicas vs formula"].value == 3 and checks["replicas vs formula"].bound == 3
    assert checks["no failures at scale-down"].passed and checks["back to min"].passed
    assert v.services["accounts"]["scale_ups"] == 1 and v.services["accounts"]["scale_downs"] == 1
    assert "verdict: PASS" in v.table()


def test_a_slow_reaction_and_late_replicas_fail_against_the_bounds():
    v = judge(SCALE_UP_AND_DOWN, EVENTS, rows(range(0, 61)), bounds=Bounds(max_reaction_s=0.5, max_ready_s=5))
    assert {c.name for c in v.failed} == {"reaction", "time to ready"}


def test_failures_while_scaling_down_and_slow_answers_while_scaling_up_fail():
    r = rows(range(0, 61))
    for row in r:
        if T0 + 45 <= row["t"] <= T0 + 52:
            row["fails_per_s"] = row["routes"][BALANCES]["fails_per_s"] = 1.0
        if T0 + 10 <= row["t"] <= T0 + 20:
            row["routes"][BALANCES]["p95_ms"] = 2500.0  # alta: 1,500 ms
    v = judge(SCALE_UP_AND_DOWN, EVENTS, r)
    failed = {c.name: c for c in v.failed}
    assert set(failed) == {"no failures at scale-down", "p95 during scale-up"}
    assert failed["p95 during scale-up"].value == 2500 and failed["p95 during scale-up"].bound == 1500


def test_a_service_stuck_at_max_replicas_fails_and_says_why():
    stuck = timeline([(t, svc(1, 1, 250, hi=1, limited=True)) for t in range(0, 30)])
    v = judge(stuck, [], rows(range(0, 30)), bounds=Bounds(expect_scale=("accounts",)))
    (failed,) = v.failed
    assert failed.name == "scaled up"
    assert "maxReplicas is 1" in failed.detail and "TooManyReplicas" in failed.detail
    assert any(c.name == "at max / ScalingLimited" and c.value == 29.0 for c in v.checks)
    # Without a named service the verdict still fails when nothing scaled.
    assert not judge(stuck, [], rows(range(0, 30))).passed


def test_not_being_back_at_min_fails():
    never_down = SCALE_UP_AND_DOWN[:5]
    v = judge(never_down, EVENTS[:1], rows(range(0, 41)))
    assert [c.name for c in v.failed] == ["back to min"]


def test_efficiency_compares_per_replica_throughput_and_can_be_a_bound():
    # 10 req/s on 1 replica near target, 24 req/s on 3: 8 per replica, efficiency 0.8.
    samples = timeline([(0, svc(1, 1, 85)), (10, svc(3, 3, 85)), (20, svc(3, 3, 85))])
    r = rows(range(0, 10), rps=10.0) + rows(range(10, 21), rps=24.0)
    v = judge(samples, [rescale(5, 3)], r, bounds=Bounds(min_efficiency=0.9))
    eff = next(c for c in v.checks if c.name == "scaling efficiency")
    assert eff.value == 0.8 and eff.passed is False


def test_the_release_gate_fails_on_regressions_beyond_the_percentages():
    base = {"summary": {"routes": [{"method": "GET", "name": "/a", "requests": 500, "p95_ms": 100.0}]},
            "verdict": {"services": {"accounts": {"rps_per_replica": {"1": 20.0}, "ready_s": 10.0}}}}
    same = gate(base, base)
    assert same and all(c.passed for c in same)
    worse = {"summary": {"routes": [{"method": "GET", "name": "/a", "requests": 500, "p95_ms": 130.0}]},
             "verdict": {"services": {"accounts": {"rps_per_replica": {"1": 15.0}, "ready_s": 16.0}}}}
    failed = {c.name for c in gate(worse, base) if c.passed is False}
    assert failed == {"p95 vs baseline", "req/s per replica vs baseline", "time to scale vs baseline"}
    assert all(c.passed for c in gate(worse, base, p95_pct=50, rps_per_replica_pct=30, time_to_scale_pct=70))
