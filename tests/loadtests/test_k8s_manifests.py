"""loadtests/k8s manifests are valid Kubernetes 1.32 objects (strict standalone JSON schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "schemas" / "kubernetes" / "v1.32.2-standalone-strict"
SCHEMA_OF = {("batch/v1", "Job"): "job-batch-v1.json", ("v1", "Service"): "service-v1.json",
             ("apps/v1", "Deployment"): "deployment-apps-v1.json"}
DOCS = [(path.name, doc) for path in sorted((ROOT / "loadtests" / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_manifests_are_a_master_job_its_service_and_a_worker_deployment():
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in DOCS)
    assert kinds == [("Deployment", "ofsre-loadtest-worker"), ("Job", "ofsre-loadtest-master"),
                     ("Service", "ofsre-loadtest-master")]


@pytest.mark.parametrize("name,doc", DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_each_manifest_validates_against_the_kubernetes_schema(name, doc):
    schema = json.loads((SCHEMAS / SCHEMA_OF[(doc["apiVersion"], doc["kind"])]).read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_workers_reach_the_master_and_run_the_same_suite():
    by_kind = {doc["kind"]: doc for _, doc in DOCS}
    master = by_kind["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    worker = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert master[:4] == worker[:4] == ["ofsre", "loadtest", "run", "step_ramp"]
    assert "--master" in master
    assert worker[worker.index("--master-host") + 1] == by_kind["Service"]["metadata"]["name"]
    ports = {p["port"] for p in by_kind["Service"]["spec"]["ports"]}
    assert 5557 in ports  # Locust's master port
    selector = by_kind["Service"]["spec"]["selector"]
    assert selector.items() <= by_kind["Job"]["spec"]["template"]["metadata"]["labels"].items()
