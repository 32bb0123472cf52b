"""Shapes as pure profiles; personas' mix and PKI (the gateway's verifier accepts the certificates)."""

from __future__ import annotations

import json

import pytest

from ofsre.loadtests import personas
from ofsre.loadtests.profiles import (
    HOURLY_SHARE,
    ArrivalStages,
    DailyCurve,
    Soak,
    Spike,
    StepRamp,
    parse_duration,
)


def test_step_ramp_grows_by_steps_and_ends():
    shape = StepRamp(step_users=10, step_seconds=30, steps=3, hold_seconds=10)
    assert [shape.at(t) for t in (0, 29.9, 30, 65, 95)] == [10, 10, 20, 30, 30]
    assert shape.at(100) is None and shape.duration == 100


def test_spike_is_a_sudden_factor_of_five():
    shape = Spike(base_users=4, factor=5, after=10, seconds=5, recovery_seconds=5)
    assert [shape.at(t) for t in (0, 9.9, 10, 14.9, 15)] == [4, 4, 20, 20, 4]
    assert shape.at(20) is None


def test_soak_ramps_then_holds():
    shape = Soak(users=20, seconds=100, ramp_seconds=10)
    assert shape.at(0) == 1 and shape.at(5) == 10 and shape.at(50) == 20 and shape.at(110) is None


def test_daily_curve_follows_the_assumed_hourly_shares_compressed():
    day = DailyCurve(peak_users=100, day_seconds=240)  # an hour every 10 s
    assert day.at(0) == round(100 * HOURLY_SHARE[0])
    assert day.at(110) == 100  # 11:00, a peak hour
    assert day.at(35) < day.at(110)  # 03:30 is the night trough
    assert day.at(240) is None and len(HOURLY_SHARE) == 24 and max(HOURLY_SHARE) == 1.0


def test_arrival_stages_ramp_linearly_like_k6():
    stages = ArrivalStages.parse("10s:10,20s:30,10s:0")
    assert stages.at(0) == 0 and stages.at(5) == 5 and stages.at(10) == 10 and stages.at(20) == 20
    assert stages.at(35) == 15 and stages.at(40) is None and stages.duration == 40
    with pytest.raises(ValueError, match="DURATION:RATE"):
        ArrivalStages.parse("10s")
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("ten")


def test_mix_parses_named_weights_and_refuses_unknown_ones():
    mix = personas.Mix.parse("payment=30, open_data=0,revoke_probability=0.5")
    assert mix.payment == 30 and mix.open_data == 0 and mix.revoke_probability == 0.5
    assert mix.account_reads == personas.DEFAULT_MIX.account_reads
    with pytest.raises(ValueError, match="unknown mix entry"):
        personas.Mix.parse("withdrawals=3")


def test_interaction_ids_are_fresh_uuids():
    ids = {personas.new_interaction_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 36 for i in ids)


def test_pki_certificates_pass_the_gateways_own_verifier(tmp_path):
    from urllib.parse import unquote

    from ofsre.platform.gateway.mtls import CertificateVerifier

    ca = personas.write_pki(tmp_path, institutions=3)
    insts = personas.load_institutions(tmp_path)
    assert len(insts) == 3 and len({i.org_id for i in insts}) == 3
    assert [row["org_id"] for row in json.loads((tmp_path / "institutions.json").read_text())] == \
        [i.org_id for i in insts]
    verifier = CertificateVerifier.from_file(ca)
    for inst in insts:
        identity = verifier.verify(unquote(inst.cert_header).encode())
        assert identity.org_id == inst.org_id and inst.origin == inst.org_id
    with pytest.raises(FileNotFoundError, match="ofsre loadtest pki"):
        personas.load_institutions(tmp_path / "missing")
