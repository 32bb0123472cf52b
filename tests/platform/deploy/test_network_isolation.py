"""The gateway is the only way in: the chart's NetworkPolicies and the gateway secret.

Issue #7: called directly, a module believed a forged ``x-ofsre-client-org-id``. In a cluster
two things stop that, and both are checked here on the rendered chart:

- **NetworkPolicy** (``templates/networkpolicy.yaml``): a module the gateway routes to admits
  connections only from the gateway's pods and from the Prometheus scraper (on the port
  serving ``/metrics``); the worker only from the scraper; the gateway from the WAF / ingress
  controller and the scraper. There is no cluster here, so the rendered policies are fed to
  :func:`admits`, a small evaluator of the NetworkPolicy rules as the Kubernetes API documents
  them (a pod selected by any ingress policy is isolated; a connection is admitted if any rule
  of any policy selecting the pod admits the source pod and port), and a matrix of sources and
  destinations is checked — including pods that must be refused. The policies are also
  validated against the Kubernetes schema (kubernetes-validate's v1.32 strict schemas).
- **OFSRE_GATEWAY_SECRET**: the gateway and every module read it from the same Secret key,
  created by the chart (random, kept across upgrades through ``lookup``) or an existing one.
"""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import pytest

from ofsre.platform.settings import SERVICES, Settings

# --------------------------------------------------------------------------- NetworkPolicy semantics


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (``{}`` selects everything) against a label set."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels}[op]:
            return False
    return True


def _peer_admits(peer: dict[str, Any], src: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # the matrix below only has in-cluster pods
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], src.namespace_labels):
            return False
    elif src.namespace != policy_namespace:  # podSelector alone: the policy's own namespace
        return False
    return selects(peer.get("podSelector"), src.labels)


def admits(policies: list[dict[str, Any]], src: Pod, dst: Pod, port: int) -> bool:
    """Whether a TCP connection from ``src`` to ``dst:port`` is admitted by these policies."""
    selecting = [p for p in policies if p["metadata"].get("namespace", dst.namespace) == dst.namespace
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"]["podSelector"], dst.labels)]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port, None) and p.get("protocol", "TCP") == "TCP"
                                 for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admits(peer, src, dst.namespace) for peer in peers):
                return True
    return False


class Pod:
    def __init__(self, namespace: str, labels: dict[str, str],
                 namespace_labels: dict[str, str] | None = None):
        self.namespace, self.labels = namespace, labels
        self.namespace_labels = {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}


# --------------------------------------------------------------------------- fixtures


def _policies(rendered) -> dict[str, dict[str, Any]]:
    return rendered.of_kind("NetworkPolicy")


def _module_pods(chart, rendered) -> dict[str, Pod]:
    return {module: Pod(chart.NAMESPACE, d["spec"]["template"]["metadata"]["labels"])
            for module, d in rendered.of_kind("Deployment").items()}


PROMETHEUS = Pod("monitoring",
                 {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack"})
INGRESS = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})


# --------------------------------------------------------------------------- policies


def test_every_module_has_one_ingress_policy_selecting_exactly_its_pods(chart):
    policies, deployments = _policies(chart.default), chart.default.of_kind("Deployment")
    assert sorted(policies) == sorted(SERVICES)
    pods = _module_pods(chart, chart.default)
    for module, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert policy["spec"]["podSelector"] == deployments[module]["spec"]["selector"]
        selected = [m for m, pod in pods.items() if selects(policy["spec"]["podSelector"], pod.labels)]
        assert selected == [module]


def test_only_the_gateway_reaches_the_api_modules(chart):
    policies = list(_policies(chart.default).values())
    pods = _module_pods(chart, chart.default)
    port = chart.values["containerPort"]
    upstream = {name for name, m in chart.values["modules"].items() if m["upstream"]}
    assert upstream == {"consents", "accounts", "payments"}
    # Any other pod of the namespace: another module, a debugging pod, a pod of another
    # release of this chart (same labels but the instance), or one in another namespace.
    strangers = {
        "debug pod": Pod(chart.NAMESPACE, {"run": "debug"}),
        "other release's gateway": Pod(chart.NAMESPACE, {**pods["gateway"].labels,
                                                         "app.kubernetes.io/instance": "other"}),
        "gateway labels, other namespace": Pod("elsewhere", pods["gateway"].labels),
        "ingress controller": INGRESS,
        **{f"module {m}": pods[m] for m in SERVICES if m != "gateway"},
    }
    for module in upstream:
        assert admits(policies, pods["gateway"], pods[module], port), module
        assert not admits(policies, pods["gateway"], pods[module], port + 1), "only the container port"
        for who, src in strangers.items():
            assert not admits(policies, src, pods[module], port), f"{who} -> {module}"
    # The worker serves no API: not even the gateway gets in.
    for src in (pods["gateway"], *strangers.values()):
        assert not admits(policies, src, pods["worker"], port)


def test_the_gateway_admits_the_ingress_controller_and_no_one_else(chart):
    policies = list(_policies(chart.default).values())
    pods = _module_pods(chart, chart.default)
    port = chart.values["containerPort"]
    assert admits(policies, INGRESS, pods["gateway"], port)
    for src in (Pod(chart.NAMESPACE, {"run": "debug"}), pods["accounts"], Pod("default", {"app": "x"})):
        assert not admits(policies, src, pods["gateway"], port)


def test_prometheus_scrapes_every_module_on_the_metrics_port(chart):
    r = chart.default
    policies = list(_policies(r).values())
    pods = _module_pods(chart, r)
    services, monitors = r.of_kind("Service"), r.of_kind("ServiceMonitor")
    for module, pod in pods.items():
        # The port the ServiceMonitor scrapes (/metrics), followed to the container port.
        [endpoint] = monitors[module]["spec"]["endpoints"]
        [service_port] = [p for p in services[module]["spec"]["ports"] if p["name"] == endpoint["port"]]
        [container] = chart.pod_spec(r.of_kind("Deployment")[module])["containers"]
        [port] = [p["containerPort"] for p in container["ports"] if p["name"] == service_port["targetPort"]]
        assert endpoint["path"] == "/metrics"
        assert admits(policies, PROMETHEUS, pod, port), module
        # Both selectors must match: another pod of the monitoring namespace, or a pod
        # labelled prometheus elsewhere, is refused.
        assert not admits(policies, Pod("monitoring", {"app.kubernetes.io/name": "grafana"}), pod, port)
        assert not admits(policies, Pod(chart.NAMESPACE, PROMETHEUS.labels), pod, port)


def test_policy_values_name_the_ingress_and_the_scraper(chart):
    waf = [{"namespaceSelector": {"matchLabels": {"team": "edge"}},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["waf"]}]}}]
    rendered = chart.render({"networkPolicy": {
        "gateway": {"from": waf},
        "prometheus": {"from": [{"namespaceSelector": {},
                                 "podSelector": {"matchLabels": {"app": "vmagent"}}}]}}})
    assert [m for m in rendered if m.kind == "NetworkPolicy" and chart.schema_errors(m)] == []
    policies = list(_policies(rendered).values())
    pods = _module_pods(chart, rendered)
    port = chart.values["containerPort"]
    assert admits(policies, Pod("edge-ns", {"app": "waf"}, {"team": "edge"}), pods["gateway"], port)
    assert not admits(policies, INGRESS, pods["gateway"], port)  # the default no longer applies
    vmagent = Pod("anywhere", {"app": "vmagent"})  # namespaceSelector {}: any namespace
    assert all(admits(policies, vmagent, pod, port) for pod in pods.values())
    assert not any(admits(policies, PROMETHEUS, pod, port) for pod in pods.values())


def test_policies_can_be_turned_off(chart):
    rendered = chart.render({"networkPolicy": {"enabled": False}})
    assert _policies(rendered) == {}
    assert {m.kind for m in rendered} == {m.kind for m in chart.default} - {"NetworkPolicy"}


@pytest.mark.parametrize("bad", [
    {"networkPolicy": {"gateway": {"from": []}}},  # admitting everyone must be said explicitly
    {"networkPolicy": {"gateway": {"from": [{}]}}},
    {"networkPolicy": {"prometheus": {"from": [{"podSelector": {"matchLabel": {"a": "b"}}}]}}},
    {"networkPolicy": {"prometheus": {"from": [{"podSelectr": {}}]}}},
    {"networkPolicy": {"enable": False}},
    {"gatewaySecret": {"secretKey": "a/b"}},
])
def test_values_schema_rejects_bad_isolation_values(chart, bad):
    with pytest.raises(helm.HelmValuesError, match="schema"):
        chart.render(bad)


def test_the_kubernetes_schema_rejects_a_broken_policy(chart):
    """The packaged NetworkPolicy schema is strict: a misspelt field is an error, not ignored."""
    policy = next(m for m in chart.default if m.kind == "NetworkPolicy")
    spec = {**policy.doc["spec"], "ingress": [{"form": [{"podSelector": {}}]}]}
    broken = type(policy)(policy.template, {**policy.doc, "spec": spec})
    assert any("form" in e for e in chart.schema_errors(broken))
    bad_port = {**policy.doc["spec"], "ingress": [{"ports": [{"port": 8080, "endPort": "8090"}]}]}
    assert chart.schema_errors(type(policy)(policy.template, {**policy.doc, "spec": bad_port}))


# --------------------------------------------------------------------------- gateway secret


def _secret_refs(chart, rendered) -> dict[str, dict[str, str]]:
    refs = {}
    for module, deployment in rendered.of_kind("Deployment").items():
        [container] = chart.pod_spec(deployment)["containers"]
        env = chart.container_env(container)
        assert "value" not in env["OFSRE_GATEWAY_SECRET"], "never a plain value"
        refs[module] = env["OFSRE_GATEWAY_SECRET"]["valueFrom"]["secretKeyRef"]
    return refs


def test_gateway_and_every_module_read_the_same_secret_key(chart):
    refs = _secret_refs(chart, chart.default)
    assert sorted(refs) == sorted(SERVICES)
    [ref] = {tuple(sorted(r.items())) for r in refs.values()}
    ref = dict(ref)
    secrets = {m.name: m.doc for m in chart.default if m.kind == "Secret"}
    assert ref["name"] in secrets and ref["key"] == chart.values["gatewaySecret"]["secretKey"]
    secret = secrets[ref["name"]]
    assert secret["type"] == "Opaque" and set(secret["data"]) == {ref["key"]}
    value = base64.b64decode(secret["data"][ref["key"]], validate=True).decode()
    assert len(value) >= 32 and value.isalnum()
    # The migrate Job serves nothing: it does not get the secret.
    [job] = [m.doc for m in chart.default if m.kind == "Job"]
    assert all("OFSRE_GATEWAY_SECRET" not in chart.container_env(c)
               for c in chart.pod_spec(job)["containers"])


def test_the_platform_reads_one_secret_in_the_gateway_and_every_module(chart):
    """The env as the kubelet would resolve it (secretKeyRef -> the rendered Secret's value),
    fed to the platform's own reader: every pod holds the same gateway_secret."""
    secrets = {m.name: m.doc for m in chart.default if m.kind == "Secret"}
    held = {}
    for module, deployment in chart.default.of_kind("Deployment").items():
        [container] = chart.pod_spec(deployment)["containers"]
        env = chart.plain_env(container)
        ref = chart.container_env(container)["OFSRE_GATEWAY_SECRET"]["valueFrom"]["secretKeyRef"]
        env["OFSRE_GATEWAY_SECRET"] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        held[module] = Settings.from_env(env).gateway_secret
    assert sorted(held) == sorted(SERVICES)
    [secret] = set(held.values())
    assert secret and len(secret) >= 32


def test_the_generated_secret_is_random(chart):
    """Offline (no cluster to look up) every render draws a new value; `helm upgrade` reuses
    the live Secret's value through `lookup` (not exercisable without a cluster)."""
    values = set()
    for _ in range(2):
        [secret] = [m.doc for m in chart.render() if m.kind == "Secret"]
        values.add(secret["data"][chart.values["gatewaySecret"]["secretKey"]])
    assert len(values) == 2


def test_an_existing_secret_is_used_and_none_created(chart):
    rendered = chart.render({"gatewaySecret": {"existingSecret": "vault-ofsre", "secretKey": "token"}})
    assert [m for m in rendered if m.kind == "Secret"] == []
    assert {tuple(sorted(r.items())) for r in _secret_refs(chart, rendered).values()} == {
        (("key", "token"), ("name", "vault-ofsre"))}


def test_a_module_env_cannot_override_the_secret_with_a_plain_value(chart):
    with pytest.raises(helm.HelmRenderError, match="OFSRE_GATEWAY_SECRET is set both"):
        chart.render({"modules": {"accounts": {"env": {"OFSRE_GATEWAY_SECRET": "guessable"}}}})
