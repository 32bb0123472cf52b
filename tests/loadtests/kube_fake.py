"""A local HTTP server answering the Kubernetes API paths the scaling verifier's client calls.

No cluster runs here: this server speaks the wire format of the real API server for the three
list calls :class:`ofsre.loadtests.watchers.KubernetesWatcher` makes, with real-shaped
``autoscaling/v2`` HorizontalPodAutoscaler, ``apps/v1`` Deployment and ``v1`` Event objects
following a scripted timeline (seconds since the first call): calm, utilisation above
target, the HPA's ``SuccessfulRescale`` to 3, three ready replicas, then back to 1. It checks the
bearer token of the kubeconfig and records every request (path and query).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from ..http_stub import HttpStub, Reply, Request, json_reply

TOKEN = "ofsre-test-token"
NS = "ofsre"
NAME = "ofsre-gateway"

# (from second, current, desired, ready, cpu utilisation %)
SCRIPT = ((0, 1, 1, 1, 40), (4, 1, 3, 1, 190), (5, 3, 3, 1, 150), (8, 3, 3, 3, 70), (14, 3, 3, 3, 20),
          (16, 1, 1, 1, 30))
EVENTS = ((4.5, 3, "above target"), (15, 1, "All metrics below target"))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubernetes:
    def __init__(self) -> None:
        self.t0: float | None = None  # the script starts with the first call (the watcher's first sample)
        self.requests: list[tuple[str, dict]] = []
        self.stub = HttpStub(self._respond, methods=("GET",), name="fake-kubernetes")
        self.url = self.stub.url

    def _respond(self, request: Request) -> Reply:
        self.requests.append((request.route, request.query))
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return json_reply(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "Unauthorized", "code": 401})
        body = self.answer(request.route, request.query)
        if body is None:
            return json_reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404})
        return json_reply(200, body)

    def state(self) -> tuple[int, int, int, int]:
        elapsed = time.time() - self.t0
        row = [r for r in SCRIPT if r[0] <= elapsed][-1]
        return row[1:]

    def answer(self, path: str, query: dict):
        if self.t0 is None:
            self.t0 = time.time()
        current, desired, ready, cpu = self.state()
        now = time.time()
        if path == f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers":
            limited = current >= 4
            return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
                    "metadata": {"resourceVersion": "100"}, "items": [{
                        "metadata": {"name": NAME, "namespace": NS, "uid": "hpa-uid-1",
                                     "creationTimestamp": _iso(self.t0 - 3600)},
                        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": NAME},
                                 "minReplicas": 1, "maxReplicas": 4,
                                 "metrics": [{"type": "Resource", "resource": {
                                     "name": "cpu",
                                     "target": {"type": "Utilization", "averageUtilization": 80}}}]},
                        "status": {"currentReplicas": current, "desiredReplicas": desired,
                                   "lastScaleTime": _iso(self.t0),
                                   "currentMetrics": [{"type": "Resource", "resource": {
                                       "name": "cpu",
                                       "current": {"averageUtilization": cpu, "averageValue": "400m"}}}],
                                   "conditions": [
                                       {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                                        "message": "recommended size matches current size",
                                        "lastTransitionTime": _iso(now)},
                                       {"type": "ScalingActive", "status": "True",
                                        "reason": "ValidMetricFound",
                                        "message": "the HPA was able to successfully calculate a replica "
                                                   "count",
                                        "lastTransitionTime": _iso(now)},
                                       {"type": "ScalingLimited", "status": "True" if limited else "False",
                                        "reason": "TooManyReplicas" if limited else "DesiredWithinRange",
                                        "message": "the desired count is within the acceptable range",
                                        "lastTransitionTime": _iso(now)}]}}]}
        if path == f"/apis/apps/v1/namespaces/{NS}/deployments":
            labels = {"app.kubernetes.io/name": NAME}
            return {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "100"},
                    "items": [{"metadata": {"name": NAME, "namespace": NS, "uid": "dep-uid-1"},
                               "spec": {"replicas": desired, "selector": {"matchLabels": labels},
                                        "template": {"metadata": {"labels": labels},
                                                     "spec": {"containers": [{"name": "gateway",
                                                                              "image": "ofsre:latest"}]}}},
                               "status": {"replicas": current, "readyReplicas": ready,
                                          "availableReplicas": ready,
                                          "updatedReplicas": current, "observedGeneration": 1}}]}
        if path == f"/api/v1/namespaces/{NS}/events":
            items = []
            for i, (at, size, why) in enumerate(EVENTS):
                if now - self.t0 >= at:
                    items.append({"metadata": {"name": f"{NAME}.{i}", "namespace": NS, "uid": f"event-{i}"},
                                  "involvedObject": {"kind": "HorizontalPodAutoscaler", "name": NAME,
                                                     "namespace": NS, "apiVersion": "autoscaling/v2"},
                                  "reason": "SuccessfulRescale", "type": "Normal", "count": 1,
                                  "message": f"New size: {size}; reason: cpu resource utilization "
                                             f"(percentage of request) {why}",
                                  "source": {"component": "horizontal-pod-autoscaler"},
                                  "firstTimestamp": _iso(self.t0 + at), "lastTimestamp": _iso(self.t0 + at)})
            return {"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "100"},
                    "items": items}
        return None

    def kubeconfig(self, path) -> str:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake",
                          "context": {"cluster": "fake", "user": "tester", "namespace": NS}}]}))
        return str(path)

    def close(self) -> None:
        self.stub.close()
