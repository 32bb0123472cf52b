"""platform/deploy/terraform, checked without Terraform: parsed with python-hcl2.

``terraform init`` needs the provider registry, which this machine cannot reach, so
``terraform validate`` cannot run here. These tests do what a parser can: every file
parses; every ``var.``/``local.``/resource/data reference resolves to a declaration; no
variable is declared and never used; every provider is pinned; the chart path exists; the
``OFSRE_*`` variables it hands the chart are ones the platform reads; and the queue knobs
agree with the queue's own defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from ofsre.platform.queue import QueueConfig

REPO = Path(__file__).resolve().parents[3]
TERRAFORM = REPO / "platform" / "deploy" / "terraform"
CHART = REPO / "platform" / "deploy" / "helm" / "ofsre-platform"
TF_FILES = sorted(TERRAFORM.glob("*.tf"))
# Resource types come from these providers (the part of the type before the first "_").
_REFERENCE = re.compile(r"(?<![\w.])(var|local)\.([A-Za-z_][\w-]*)")
_RESOURCE_REF = re.compile(r"(?<![\w.])(data\.)?((?:aws|helm|kubernetes|random)_[a-z0-9_]+)\.([a-z0-9_-]+)")


def _meta(key: str) -> bool:
    """python-hcl2's own keys (``__is_block__``, ``__comments__``), not Terraform's."""
    return key.startswith("__")


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@cache
def _parsed(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return hcl2.load(f)


def _blocks(kind: str) -> Iterator[tuple[str, Any]]:
    """(label, body) of every top-level ``kind`` block (variable, locals, output, ...)."""
    for path in TF_FILES:
        for block in _parsed(path).get(kind, []):
            for label, body in block.items():
                if not _meta(label):
                    yield _unquote(label), body


def _typed(kind: str) -> set[tuple[str, str]]:
    """(type, name) of every resource or data block."""
    return {(t, _unquote(n)) for t, names in _blocks(kind) for n in names if not _meta(n)}


def _resource(kind: str, name: str) -> dict[str, Any]:
    [body] = [b[f'"{name}"'] for t, b in _blocks("resource") if t == kind and f'"{name}"' in b]
    return body


def _strings(node: Any) -> Iterator[str]:
    """Every key and value of the configuration: what Terraform evaluates, so neither
    comments nor descriptions (prose may name a variable it does not use)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if not _meta(key) and key != "description":
                yield key
                yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _all_strings() -> list[str]:
    return [s for path in TF_FILES for s in _strings(_parsed(path))]


def _references(prefix: str) -> set[str]:
    return {name for s in _all_strings() for kind, name in _REFERENCE.findall(s) if kind == prefix}


def _variable_default(name: str) -> Any:
    [body] = [body for label, body in _blocks("variable") if label == name]
    return body["default"]


def test_terraform_files_exist_and_parse():
    assert {p.name for p in TF_FILES} >= {"versions.tf", "variables.tf", "outputs.tf"}
    for path in TF_FILES:
        assert _parsed(path), path.name


def test_every_referenced_variable_is_declared_and_every_declared_one_used():
    declared = {label for label, _ in _blocks("variable")}
    used = _references("var")
    assert used - declared == set(), "referenced but not declared"
    assert declared - used == set(), "declared but never used"


def test_every_variable_has_a_type_and_a_description():
    for name, body in _blocks("variable"):
        assert "type" in body and _unquote(body.get("description", "")), name


def test_every_local_reference_is_declared():
    declared = {key for path in TF_FILES for block in _parsed(path).get("locals", []) for key in block
                if not _meta(key)}
    assert _references("local") - declared == set()


def test_every_resource_and_data_reference_is_declared():
    resources, data = _typed("resource"), _typed("data")
    for s in _all_strings():
        for is_data, kind, name in _RESOURCE_REF.findall(s):
            where = f"{'data.' if is_data else ''}{kind}.{name}"
            assert (kind, name) in (data if is_data else resources), where


def test_terraform_and_every_provider_are_pinned():
    [terraform] = [block for path in TF_FILES for block in _parsed(path).get("terraform", [])]
    assert _unquote(terraform["required_version"]).startswith(">=")
    [providers] = terraform["required_providers"]
    declared = {name: spec for name, spec in providers.items() if not _meta(name)}
    pinned = {name for name, spec in declared.items()
              if _unquote(spec["source"]) == f"hashicorp/{name}" and _unquote(spec["version"])}
    used = {kind.split("_", 1)[0] for kind, _ in _typed("resource") | _typed("data")}
    assert used <= pinned == set(declared)


def test_outputs_are_described():
    outputs = dict(_blocks("output"))
    assert outputs
    for name, body in outputs.items():
        assert _unquote(body["description"]) and "value" in body, name


def test_the_platform_release_installs_the_chart_in_this_repository():
    chart = _unquote(_resource("helm_release", "ofsre_platform")["chart"])
    assert chart.startswith("${path.module}/")
    assert (TERRAFORM / chart.removeprefix("${path.module}/") / "Chart.yaml").is_file()


def test_every_ofsre_variable_it_sets_is_read_by_the_platform(unread_by_platform):
    names = {n for s in _all_strings() for n in re.findall(r"\bOFSRE_[A-Z0-9_]+\b", s)}
    assert names, "terraform configures the platform through OFSRE_* variables"
    assert unread_by_platform(names) == set()


@pytest.mark.parametrize(("variable", "check"), [
    # SQS's redrive is a backstop: the app dead-letters after max_attempts deliveries first
    # (the adapter uses the same max_attempts + 1 when it creates a queue itself).
    ("queue_max_receive_count", lambda default, q: default == q.max_attempts + 1),
    # The visibility timeout is the app's lease; the chart passes it as OFSRE_QUEUE_LEASE_SECONDS.
    ("queue_visibility_timeout_seconds", lambda default, q: default == q.lease_seconds),
])
def test_queue_defaults_agree_with_the_queue_adapter(variable, check):
    assert check(_variable_default(variable), QueueConfig())


def test_queue_names_follow_the_sqs_adapter_convention():
    """ofsre.platform.queue.sqs: queue <prefix><topic>, DLQ <prefix><topic>-dlq, and {topic} in
    OFSRE_QUEUE_SNS_TOPIC_ARN replaced by <prefix><topic>."""
    prefixed = '"${var.name_prefix}${each.key}'
    assert _resource("aws_sqs_queue", "queue")["name"] == prefixed + '"'
    assert _resource("aws_sqs_queue", "dlq")["name"] == prefixed + '-dlq"'
    assert _resource("aws_sns_topic", "topic")["name"] == prefixed + '"'
    [template] = [block["sns_topic_arn_template"]
                  for path in TF_FILES for block in _parsed(path).get("locals", [])
                  if "sns_topic_arn_template" in block]
    assert _unquote(template).endswith(":{topic}")
