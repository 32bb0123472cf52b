"""Watch the scaled workloads while a suite runs: the local runtime, or a Kubernetes cluster.

Both watchers give the same normalised picture (see :mod:`.verdict`): a *sample* of every
autoscaled workload (current/desired/ready replicas, min/max, utilisation per resource and its
target, whether ``ScalingLimited`` holds) and the HPA's *events*. They run in the verifier's
own process, which never imports locust: the kubernetes client's ``ssl`` never meets gevent.

* :class:`LocalWatcher` reads the local runtime's ``/status`` (what ``ofsre platform status``
  shows) and scrapes every replica's ``/metrics`` for the server's own request counts.
* :class:`KubernetesWatcher` reads ``autoscaling/v2`` HorizontalPodAutoscalers, ``apps/v1``
  Deployments and the ``SuccessfulRescale`` events of the namespace through the official
  ``kubernetes`` client (``load_kube_config`` or in-cluster configuration).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import urllib.request
from typing import Any

from ofsre.instrumentation import semconv

__all__ = ["LocalWatcher", "KubernetesWatcher", "prometheus_server_view"]

log = logging.getLogger("ofsre.loadtests")
_REQUESTS = semconv.HTTP_REQUESTS.series  # ofsre_http_server_requests_total


_DURATION_BUCKET = semconv.HTTP_DURATION.name + "_bucket"


def prometheus_server_view(url: str, seconds: float, service: str = "gateway") -> dict[tuple[str, str], dict]:
    """The server's view from Prometheus' HTTP API (``/api/v1/query``): requests and p95 per
    (method, route) at ``service`` over the last ``seconds``."""
    from urllib.parse import urlencode

    window = f"{max(1, int(seconds + 0.999))}s"
    sel = f'{{service="{service}"}}'
    queries = {"requests": f"sum by (method, route) (increase({_REQUESTS}{sel}[{window}]))",
               "p95_ms": f"1000 * histogram_quantile(0.95, sum by (le, method, route) "
                         f"(rate({_DURATION_BUCKET}{sel}[{window}])))"}
    view: dict[tuple[str, str], dict] = {}
    for field, query in queries.items():
        answer = _get_json(f"{url.rstrip('/')}/api/v1/query?{urlencode({'query': query})}")
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {query!r}: {answer.get('error')}")
        for item in answer["data"]["result"]:
            key = (item["metric"].get("method", ""), item["metric"].get("route", ""))
            value = float(item["value"][1])
            if value == value:  # NaN: no sample in the window
                view.setdefault(key, {})[field] = value
    return view


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def parse_metrics(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one series in a Prometheus text exposition (prometheus_client's parser:
    label values such as ``/accounts/{accountId}`` contain braces)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name]


class LocalWatcher:
    """The local runtime through its ``/status`` endpoint (JSON)."""

    def __init__(self, status_url: str) -> None:
        self.status_url = status_url
        self.events: list[dict] = []
        self._seen_events: set[tuple] = set()
        # replica url -> (route, method, status) -> count
        self.server_counts: dict[str, dict[tuple, float]] = {}

    def sample(self, now: float) -> dict:
        st = _get_json(self.status_url)
        services = {}
        for name, h in (st.get("hpa") or {}).items():
            dep = (st.get("deployments") or {}).get(name, {})
            conditions = {c["type"]: c for c in h.get("conditions", [])}
            limited = conditions.get("ScalingLimited", {})
            services[name] = {
                "current": h.get("current_replicas"), "desired": h.get("desired_replicas"),
                "ready": dep.get("available"), "min": h.get("min_replicas"), "max": h.get("max_replicas"),
                "utilization": {m["resource"]: m["utilization"] for m in h.get("metrics", [])
                                if m.get("utilization") is not None},
                "targets": dict(h.get("targets") or {}),
                "limited": limited.get("status") == "True" and limited.get("reason") == "TooManyReplicas",
                "replica_urls": [r["url"] for r in dep.get("replicas", []) if r.get("state") == "ready"],
            }
        for e in st.get("events", []):
            key = (e.get("time"), e.get("hpa"), e.get("reason"), e.get("message"))
            if key not in self._seen_events:
                self._seen_events.add(key)
                self.events.append({"t": e.get("time"), "service": e.get("hpa"), "type": e.get("type"),
                                    "reason": e.get("reason"), "message": e.get("message")})
        return {"t": now, "services": services}

    def scrape_gateway(self, sample: dict) -> None:
        """Keep the last request counts each gateway replica reported (they vanish with it)."""
        for url in sample["services"].get("gateway", {}).get("replica_urls", []):
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            counts = {}
            for labels, value in parse_metrics(text, _REQUESTS):
                counts[(labels.get("method"), labels.get("route"), labels.get("status"))] = value
            self.server_counts[url] = counts

    def server_requests(self) -> dict[tuple[str, str], float]:
        """(method, route) → requests the gateway replicas counted, summed over replicas."""
        total: dict[tuple[str, str], float] = {}
        for counts in self.server_counts.values():
            for (method, route, _status), v in counts.items():
                total[(method, route)] = total.get((method, route), 0.0) + v
        return total


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class KubernetesWatcher:
    """HPAs, Deployments and HPA events of one namespace through the ``kubernetes`` client."""

    def __init__(self, namespace: str, *, kubeconfig: str | None = None, context: str | None = None,
                 hpas: tuple[str, ...] = ()) -> None:
        from kubernetes import client, config

        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, context=context)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(context=context)
        self.namespace = namespace
        self.hpas = set(hpas)
        # Any: the client's models type every field Optional; the API server fills the ones read here.
        self.autoscaling: Any = client.AutoscalingV2Api()
        self.apps: Any = client.AppsV1Api()
        self.core = client.CoreV1Api()
        self.events: list[dict] = []
        self._seen: set[str] = set()
        self.server_counts: dict = {}

    def sample(self, now: float) -> dict:
        services = {}
        deployments = {d.metadata.name: d for d in self.apps.list_namespaced_deployment(self.namespace).items}
        for h in self.autoscaling.list_namespaced_horizontal_pod_autoscaler(self.namespace).items:
            name = h.metadata.name
            if self.hpas and name not in self.hpas:
                continue
            target_ref = h.spec.scale_target_ref.name
            dep = deployments.get(target_ref)
            targets = {}
            for m in h.spec.metrics or []:
                if m.type == "Resource" and m.resource.target.average_utilization is not None:
                    targets[m.resource.name] = m.resource.target.average_utilization
            util = {}
            for m in (h.status.current_metrics or []):
                if m.type == "Resource" and m.resource.current.average_utilization is not None:
                    util[m.resource.name] = m.resource.current.average_utilization
            limited = any(c.type == "ScalingLimited" and c.status == "True" and c.reason == "TooManyReplicas"
                          for c in (h.status.conditions or []))
            services[name] = {
                "current": h.status.current_replicas, "desired": h.status.desired_replicas,
                "ready": (dep.status.ready_replicas or 0) if dep is not None else None,
                "min": h.spec.min_replicas or 1, "max": h.spec.max_replicas, "utilization": util,
                "targets": targets, "limited": limited, "deployment": target_ref}
        self._read_events()
        return {"t": now, "services": services}

    def _read_events(self) -> None:
        listed = self.core.list_namespaced_event(self.namespace,
                                                 field_selector="involvedObject.kind=HorizontalPodAutoscaler")
        for e in listed.items:
            uid = e.metadata.uid or f"{e.metadata.name}/{e.count}"
            if uid in self._seen or (self.hpas and e.involved_object.name not in self.hpas):
                continue
            self._seen.add(uid)
            t = _ts(e.last_timestamp) or _ts(e.event_time) or _ts(e.first_timestamp)
            self.events.append({"t": t, "service": e.involved_object.name, "type": e.type, "reason": e.reason,
                                "message": e.message})

    def scrape_gateway(self, sample: dict) -> None:
        """Cluster pods are not reachable from here; the server's view comes from ``--prometheus``."""

    def server_requests(self) -> dict:
        return {}
