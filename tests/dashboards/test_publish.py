"""``ofsre dashboards publish`` against a local server speaking Grafana's HTTP API (fake_grafana.py):
folder creation, overwrite by uid, a 412 version conflict and a 401, each reported on one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ofsre.alerts.config import MonitoringConfig
from ofsre.dashboards import DASHBOARDS, build_all
from ofsre.dashboards.publish import connect, publish

from .fake_grafana import FakeGrafana

UIDS = sorted(ref.uid for ref in DASHBOARDS.values())


@pytest.fixture
def grafana():
    g = FakeGrafana(token="s3cret")
    yield g
    g.close()


@pytest.fixture(scope="module")
def dashboards():
    return build_all(MonitoringConfig())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ofsre", "dashboards", "publish", *args],
                          capture_output=True, text=True, timeout=120)


def test_publish_creates_the_folder_and_uploads_every_dashboard(grafana):
    out = _cli("--url", grafana.url, "--token", "s3cret", "--folder", "Open Finance")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith(f"{len(UIDS)} published, 0 failed")
    [folder] = grafana.folders.values()
    assert folder["title"] == "Open Finance"
    assert sorted(grafana.dashboards) == UIDS
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {folder["uid"]}
    posted = [b for m, p, b in grafana.requests if p == "/api/dashboards/db"]
    assert all(b["overwrite"] is True and b["dashboard"]["id"] is None for b in posted)
    # A second publish reuses the folder and overwrites by uid: same dashboards, version 2.
    assert _cli("--url", grafana.url, "--token", "s3cret", "--folder", "Open Finance").returncode == 0
    assert len(grafana.folders) == 1
    assert {d["version"] for d in grafana.dashboards.values()} == {2}


def test_a_version_conflict_fails_that_dashboard_only_with_one_clear_line(grafana):
    grafana.conflicts = {"ofsre-queues"}
    out = _cli("--url", grafana.url, "--token", "s3cret")
    assert out.returncode == 1
    failed = [line for line in out.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == ["FAILED ofsre-queues: 412 version conflict: "
                      "The dashboard has been changed by someone else"]
    assert sorted(grafana.dashboards) == [u for u in UIDS if u != "ofsre-queues"]
    assert out.stdout.strip().endswith(f"{len(UIDS) - 1} published, 1 failed")


def test_a_wrong_token_is_a_401_for_every_dashboard(grafana):
    out = _cli("--url", grafana.url, "--token", "wrong")
    assert out.returncode == 1
    failed = out.stderr.strip().splitlines()
    assert len(failed) == len(UIDS)
    assert all(line.endswith("folder 'ofsre': 401 unauthorized: check --token or --basic-auth")
               for line in failed)
    assert grafana.dashboards == {}


def test_basic_auth_works_and_bad_arguments_are_one_line(dashboards):
    g = FakeGrafana(token=None, basic=("admin", "pw"))
    try:
        result = publish(connect(g.url, basic_auth="admin:pw"), dashboards)
        assert result.ok and sorted(result.published) == UIDS
    finally:
        g.close()
    out = _cli("--url", "http://127.0.0.1:9", "--basic-auth", "nocolon")
    assert out.returncode == 2
    assert out.stderr.strip() == "ofsre dashboards: --basic-auth must be USER:PASSWORD"


def test_an_unreachable_grafana_fails_every_dashboard(dashboards):
    result = publish(connect("http://127.0.0.1:9", token="t", timeout=2), dashboards)
    assert not result.ok and sorted(result.failed) == UIDS
    assert all("cannot reach Grafana" in r for r in result.failed.values())
