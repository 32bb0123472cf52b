"""Fixtures for the deploy tests: render the Helm chart and validate what it renders.

The chart is rendered by Helm's own Go template engine, loaded from the PyPI package
``helm-python-sdk`` (``import helm_python``: a ctypes binding to Helm v4's SDK shipped as a
shared library inside the wheel; the ``dev`` extra installs it). No helm binary and no
cluster are involved: ``Chart.render`` is ``helm template``.

Rendered manifests are checked against the JSON Schemas vendored in ``shared/schemas``
beside the repository (``<repo>/../shared/schemas``; CI lays a copy of ``shared/`` at the
same relative place). The two kinds not vendored there, NetworkPolicy and Secret, are checked
against the same Kubernetes version's strict schemas shipped in the PyPI package
``kubernetes-validate`` (its ``v1.32.0-local-strict`` folder; the ``dev`` extra installs it).
``KINDS`` maps every kind the chart may render to its apiVersion and schema: a kind missing
there fails the test, so nothing is rendered unvalidated.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[3]
CHART_DIR = REPO / "platform" / "deploy" / "helm" / "ofsre-platform"
SCHEMAS = REPO.parent / "shared" / "schemas" / "kubernetes"
_K8S = "v1.32.2-standalone-strict"
# A schema from the kubernetes-validate wheel: "local" schemas $ref one _definitions.json.
_PACKAGED = "kubernetes-validate:"
_PACKAGED_DIR = "v1.32.0-local-strict"

# kind -> (apiVersion, schema file under shared/schemas/kubernetes)
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", f"{_K8S}/deployment-apps-v1.json"),
    "Service": ("v1", f"{_K8S}/service-v1.json"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", f"{_K8S}/horizontalpodautoscaler-autoscaling-v2.json"),
    "PodDisruptionBudget": ("policy/v1", f"{_K8S}/poddisruptionbudget-policy-v1.json"),
    "Job": ("batch/v1", f"{_K8S}/job-batch-v1.json"),
    "ConfigMap": ("v1", f"{_K8S}/configmap-v1.json"),
    "NetworkPolicy": ("networking.k8s.io/v1", f"{_PACKAGED}networkpolicy-networking-v1.json"),
    "Secret": ("v1", f"{_PACKAGED}secret-v1.json"),
    "ServiceMonitor": ("monitoring.coreos.com/v1", "crds/monitoring.coreos.com/servicemonitor_v1.json"),
}
# Every module gets one of each of these.
MODULE_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor")
NAMESPACE = "ofsre"


@dataclass(frozen=True)
class Manifest:
    template: str  # e.g. ofsre-platform/templates/hpa.yaml
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]

    @property
    def component(self) -> str:
        return self.doc["metadata"]["labels"]["app.kubernetes.io/component"]


class Rendered(list[Manifest]):
    """The manifests of one render, with look-ups the tests share."""

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        """component (module name, or ``migrate``) -> manifest of that kind."""
        return {m.component: m.doc for m in self if m.kind == kind}


def render_chart(values: dict[str, Any] | None = None, *, release: str = "ofsre") -> Rendered:
    """``helm template <release> <chart> -n ofsre`` with ``values`` merged over values.yaml."""
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    out = Rendered()
    for template, text in sorted(files.items()):
        if template.endswith("NOTES.txt"):
            continue
        out.extend(Manifest(template, doc) for doc in yaml.safe_load_all(text) if doc)
    return out


@cache
def _validator(kind: str) -> Draft7Validator | Draft202012Validator:
    source = KINDS[kind][1]
    if source.startswith(_PACKAGED):
        return _packaged_validator(source.removeprefix(_PACKAGED))
    return Draft7Validator(json.loads((SCHEMAS / source).read_text()))


def _packaged_validator(name: str) -> Draft202012Validator:
    """kubernetes-validate's schema ``name``, its ``$ref``s resolved in the same folder's
    ``_definitions.json`` (what ``kubernetes_validate.validate`` does, but keeping every error)."""
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / _PACKAGED_DIR
    schema, definitions = (json.loads((folder / f).read_text()) for f in (name, "_definitions.json"))
    resources = [Resource.from_contents(doc) for doc in (schema, definitions)]
    return Draft202012Validator(schema, registry=Registry().with_resources((r.id(), r) for r in resources))


def schema_errors(manifest: Manifest) -> list[str]:
    """Why ``manifest`` is not a valid object of its kind (empty if it is)."""
    where = f"{manifest.template}: {manifest.kind}/{manifest.name}"
    if manifest.kind not in KINDS:
        return [f"{where}: kind has no schema in KINDS"]
    errors = []
    if manifest.doc.get("apiVersion") != KINDS[manifest.kind][0]:
        errors.append(f"{where}: apiVersion {manifest.doc.get('apiVersion')} != {KINDS[manifest.kind][0]}")
    for e in _validator(manifest.kind).iter_errors(manifest.doc):
        errors.append(f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
    return errors


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> EnvVar; fails on a duplicate name (Helm's three-way merge cannot handle one)."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env names in {container['name']}: {names}"
    return {e["name"]: e for e in container.get("env", [])}


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The literal ``value`` entries of a container's env, as a process would see them."""
    return {k: e["value"] for k, e in container_env(container).items() if "value" in e}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


class ChartKit:
    """What the chart tests share, handed out by the ``chart`` fixture (test modules cannot
    import conftest under ``--import-mode=importlib``)."""

    KINDS = KINDS
    MODULE_KINDS = MODULE_KINDS
    NAMESPACE = NAMESPACE
    CHART_DIR = CHART_DIR
    render = staticmethod(render_chart)
    schema_errors = staticmethod(schema_errors)
    container_env = staticmethod(container_env)
    plain_env = staticmethod(plain_env)
    pod_spec = staticmethod(pod_spec)

    def __init__(self) -> None:
        self.values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
        self.default: Rendered = render_chart()  # what `helm install` does without -f


# Where the code that reads OFSRE_* variables lives.
PYTHON_SOURCES = ("cli", "instrumentation", "exporters", "platform/services", "platform/queue",
                  "platform/runtime")


@pytest.fixture(scope="session")
def unread_by_platform() -> Callable[[Iterable[str]], set[str]]:
    """``f(names)``: the names that no Python source of ofsre mentions (a typo, or a knob
    that does not exist). A textual check, so it also works for names read through tables."""
    sources = "\n".join(p.read_text() for folder in PYTHON_SOURCES for p in (REPO / folder).rglob("*.py"))
    return lambda names: {name for name in names if name not in sources}


@pytest.fixture(scope="session")
def chart() -> ChartKit:
    return ChartKit()
