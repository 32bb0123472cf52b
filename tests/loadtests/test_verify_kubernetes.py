"""``verify-scaling --target kubernetes`` against a local server speaking the Kubernetes API.

No cluster runs here (see kube_fake.py): the verifier's real ``kubernetes`` client reads the
scripted HPA / Deployment / Event objects while Locust, in a process of its own (gevent never
meets the client's ssl), drives a stand-in gateway serving open data.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import clean_env
from .kube_fake import NAME, FakeKubernetes

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube():
    fake = FakeKubernetes()
    yield fake
    fake.close()


def _echo(request):
    return 200, {"content-type": "application/json",
                 "x-fapi-interaction-id": request.headers.get("x-fapi-interaction-id", "")}, b'{"data": []}'


def test_the_verdict_reads_hpas_deployments_and_rescale_events_from_the_api(kube, stand_in, tmp_path):
    gateway = stand_in(_echo)
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    out = subprocess.run(
        [sys.executable, "-m", "ofsre", "loadtest", "verify-scaling", "--target", "kubernetes", "--host",
         gateway.url,
         "--namespace", "ofsre", "--kubeconfig", kubeconfig, "--report", str(tmp_path / "report"),
         "--expect-scale", NAME, "--cooldown", "10", "--",
         "--mix", "account_reads=0,new_consent=0,payment=0,open_data=1", "--think-time", "0.05,0.1",
         "--base-users", "2", "--spike-after", "2", "--spike-seconds", "8", "--recovery-seconds", "10"],
        capture_output=True, text=True, timeout=180, env=clean_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["target"] == "kubernetes" and report["passed"]
    svc = report["verdict"]["services"][NAME]
    assert svc["scale_ups"] == 1 and svc["scale_downs"] == 1 and svc["peak"] == 3
    checks = {c["name"]: c for c in report["verdict"]["checks"] if c["service"] == NAME}
    assert checks["replicas vs formula"]["bound"] == 3           # ceil(1 × 190 / 80)
    assert checks["back to min"]["passed"] and checks["no failures at scale-down"]["passed"]
    assert 0 <= checks["reaction"]["value"] <= 2
    reasons = [(e["reason"], e["message"].split(";")[0]) for e in report["events"]]
    assert reasons == [("SuccessfulRescale", "New size: 3"), ("SuccessfulRescale", "New size: 1")]
    # The client called exactly the documented API paths, events filtered to HPAs.
    paths = {p for p, _ in kube.requests}
    assert paths == {"/apis/autoscaling/v2/namespaces/ofsre/horizontalpodautoscalers",
                     "/apis/apps/v1/namespaces/ofsre/deployments", "/api/v1/namespaces/ofsre/events"}
    selectors = {q.get("fieldSelector", [""])[0] for p, q in kube.requests if p.endswith("/events")}
    assert selectors == {"involvedObject.kind=HorizontalPodAutoscaler"}
