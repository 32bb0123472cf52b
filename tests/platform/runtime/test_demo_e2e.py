"""``ofsre demo`` end to end: the real services, a journey through the gateway, a summary, all stopped."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_ofsre_demo_runs_the_journey_and_stops_everything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFSRE_")}  # the demo's own defaults
    out = subprocess.run([sys.executable, "-m", "ofsre", "demo", "--data-dir", str(tmp_path), "--payments",
                          "2",
                          # the scaling phase: tests/loadtests/test_verify_e2e.py, test_demo_scaling.py
                          "--no-scaling"],
                         capture_output=True, text=True, timeout=170, env=env, cwd=tmp_path)
    text = out.stdout
    assert out.returncode == 0, text + out.stderr
    assert "journey OK" in text
    # Progress, then the summary read back from the services' /metrics.
    assert "[1/5] starting the platform" in text and "[5/5] stopping everything" in text
    assert re.search(r"accounts\s+GET\s+/open-banking/accounts/v2/accounts/\{accountId\}/balances\s+200",
                     text)
    assert re.search(r"POST\s+/open-banking/payments/v4/pix/payments\s+p95\s+\d+ ms\s+limit\s+1500 ms", text)
    assert "payments settled (worker acks on pix-payments): 2" in text
    assert re.search(r"consents\s+1 ready of 1", text)
    # Everything was stopped: the state file is gone and no replica log shows a crash.
    assert not (tmp_path / "runtime.json").exists()
    for log in (tmp_path / "logs").glob("*-1.log"):
        assert "Traceback" not in log.read_text(), log.name
