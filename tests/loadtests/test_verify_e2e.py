"""``ofsre loadtest verify-scaling --target local`` end to end: real platform, real Locust, real HPA loop.

Short windows (1.5 s sync, 6 s scale-down window) and small CPU requests make the platform
scale within seconds on this machine; the spike shape keeps traffic flowing while it scales
back down. The HTML report is opened in headless Chromium (Debian's package; `make test`
installs it) and must have decoded all four plots.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import clean_env

pytestmark = pytest.mark.e2e

# Gateway, consents and accounts only (the payment journey is covered by test_suite_e2e.py): fewer
# processes start faster on a shared 2-core machine.
SHORT = ["--sync-period", "1.5", "--scale-down-window", "6", "--cpu-request", "0.1", "--gateway-cpu-request",
         "0.05", "--institutions", "6", "--services", "consents,accounts"]
MIX = ("--mix", "account_reads=70,new_consent=30,payment=0,open_data=0", "--think-time", "0.1,0.3")


def verify(tmp_path, *args: str, suite_args: tuple[str, ...],
           timeout: float = 360) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ofsre", "loadtest", "verify-scaling", "--target", "local",
           "--report", str(tmp_path / "report"), "--data-dir", str(tmp_path / "var"), *SHORT, *args,
           "--", *MIX, *suite_args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                              cwd=tmp_path)
    finally:  # the platform the verifier started must not outlive a failed test
        subprocess.run([sys.executable, "-m", "ofsre", "platform", "down", "--data-dir",
                        str(tmp_path / "var")],
                       capture_output=True, timeout=120, env=clean_env())


def test_a_spike_scales_the_gateway_up_and_down_and_the_verdict_passes(tmp_path):
    out = verify(tmp_path, "--expect-scale", "gateway", "--max-replicas", "3", "--cooldown", "30",
                 suite_args=("--base-users", "2", "--spike-factor", "4", "--spike-after", "6",
                             "--spike-seconds", "20", "--recovery-seconds", "25"))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "verdict: PASS" in out.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] and report["verdict"]["passed"]
    gw = report["verdict"]["services"]["gateway"]
    assert gw["scale_ups"] >= 1 and gw["scale_downs"] >= 1 and gw["peak"] >= 2
    checks = {(c["service"], c["name"]): c for c in report["verdict"]["checks"]}
    assert checks[("gateway", "back to min")]["passed"] and checks[("client", "catalog thresholds")]["passed"]
    # New gateway processes really served traffic: the platform's own counters, per replica.
    served = {url: n for url, n in report["views"]["gateway_replicas"].items() if n > 0}
    assert len(served) >= 2, report["views"]["gateway_replicas"]
    assert any(e["reason"] == "SuccessfulRescale" and e["service"] == "gateway" for e in report["events"])
    assert re.search(r"report: .*report\.html", out.stdout)
    _opens_in_chromium(tmp_path / "report" / "report.html")


def _opens_in_chromium(page) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (make test installs it)"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-plots-loaded="4"' in dom, dom[:500]
    for alt in ("users", "requests per second", "p95 latency", "replicas per service"):
        assert f'alt="{alt}"' in dom
    assert re.search(r'id="verdict">PASS<', dom)


def test_too_few_max_replicas_give_a_failing_verdict_that_says_why(tmp_path):
    out = verify(tmp_path, "--expect-scale", "gateway", "--max-replicas", "1", "--cooldown", "5",
                 suite_args=("--base-users", "3", "--spike-factor", "3", "--spike-after", "3",
                             "--spike-seconds", "12", "--recovery-seconds", "2"))
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"gateway\s+scaled up\s+FAIL.*maxReplicas is 1", out.stdout), out.stdout[-3000:]
    assert "verdict: FAIL" in out.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert not report["passed"] and any("maxReplicas is 1" in f for f in report["failed"])
