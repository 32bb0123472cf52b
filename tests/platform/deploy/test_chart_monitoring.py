"""The chart's monitoring block: dashboards as Grafana-sidecar ConfigMaps and the rules as a PrometheusRule.

Rendered by Helm's own engine (conftest.render_chart). ConfigMaps are validated with the
Kubernetes schema (conftest.schema_errors), the PrometheusRule against prometheus-operator's CRD
schema in ``shared/schemas``. The chart's copies of the generated files must equal a fresh
``ofsre dashboards build`` / ``ofsre alerts build`` with files/monitoring/config.toml, so they
cannot go stale; the bundled rules also pass ``promtool check rules``.
"""

from __future__ import annotations

import json
import subprocess

import helm_python as helm
import pytest
import yaml
from jsonschema import Draft7Validator

from ofsre.alerts import build as rules_build
from ofsre.alerts.config import load_config
from ofsre.dashboards import DASHBOARDS, build_all
from ofsre.dashboards._lib import to_json

from .conftest import CHART_DIR, SCHEMAS, render_chart, schema_errors

FILES = CHART_DIR / "files" / "monitoring"
CRD = SCHEMAS / "crds" / "monitoring.coreos.com" / "prometheusrule_v1.json"
ON = {"monitoring": {"dashboards": {"enabled": True}, "rules": {"enabled": True}}}


def test_monitoring_is_off_by_default():
    kinds = {(m.kind, m.name) for m in render_chart()}
    assert not any(k == "PrometheusRule" or "dashboard" in n for k, n in kinds)


def test_dashboards_render_as_sidecar_configmaps():
    rendered = render_chart({"monitoring": {"dashboards": {"enabled": True, "labels": {"team": "sre"},
                                                           "annotations": {"grafana_folder": "ofsre"}}}})
    maps = [m for m in rendered
            if m.kind == "ConfigMap" and m.doc["metadata"]["labels"].get("grafana_dashboard")]
    assert sorted(m.name for m in maps) == sorted(f"ofsre-dashboard-{k}" for k in DASHBOARDS)
    for m in maps:
        assert schema_errors(m) == []
        meta = m.doc["metadata"]
        assert meta["labels"]["grafana_dashboard"] == "1" and meta["labels"]["team"] == "sre"
        assert meta["annotations"] == {"grafana_folder": "ofsre"}
        [(name, text)] = m.doc["data"].items()
        assert json.loads(text)["uid"] == name.removesuffix(".json")
        assert text + "\n" == (FILES / "dashboards" / name).read_text()


def test_rules_render_as_a_valid_prometheusrule_with_templates_untouched():
    rendered = render_chart({**ON, "monitoring": {**ON["monitoring"],
                                                  "rules": {"enabled": True, "labels": {"release": "kps"}}}})
    [rule] = [m for m in rendered if m.kind == "PrometheusRule"]
    errors = list(Draft7Validator(json.loads(CRD.read_text())).iter_errors(rule.doc))
    assert errors == [], [e.message for e in errors[:3]]
    assert rule.name == "ofsre-rules" and rule.doc["metadata"]["labels"]["release"] == "kps"
    bundled = yaml.safe_load((FILES / "rules" / "prometheusrule.yaml").read_text())
    assert rule.doc["spec"] == bundled["spec"]
    descriptions = [r["annotations"]["description"] for g in rule.doc["spec"]["groups"] for r in g["rules"]
                    if "alert" in r]
    assert all("{{ $labels." in d or "{{ $value" in d for d in descriptions)


def test_rules_from_your_own_build_replace_the_bundled_ones(tmp_path):
    own = tmp_path / "m.toml"
    own.write_text('namespace = "pix"\nrunbook_base_url = "https://wiki.example/runbooks"\n')
    text = rules_build.render_all(load_config(own))["prometheusrule.yaml"]
    rendered = render_chart({"monitoring": {"rules": {"enabled": True, "prometheusRule": text}}})
    [rule] = [m for m in rendered if m.kind == "PrometheusRule"]
    urls = {r["annotations"]["runbook_url"]
            for g in rule.doc["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert all(u.startswith("https://wiki.example/runbooks/") for u in urls)
    with pytest.raises(helm.HelmRenderError, match="monitoring.rules.prometheusRule: not a PrometheusRule"):
        render_chart({"monitoring": {"rules": {"enabled": True, "prometheusRule": "kind: ConfigMap\n"}}})


def test_an_unknown_monitoring_key_is_refused_by_the_values_schema():
    with pytest.raises(helm.HelmValuesError, match="dashbords"):
        render_chart({"monitoring": {"dashbords": {"enabled": True}}})


def test_the_charts_copies_are_what_the_generators_write_now(tmp_path):
    cfg = load_config(FILES / "config.toml")
    for d in build_all(cfg).values():
        assert (FILES / "dashboards" / f"{d['uid']}.json").read_text() == to_json(d), (
            f"{d['uid']}: stale; regenerate as files/monitoring/config.toml says")
    for name, text in rules_build.render_all(cfg).items():
        assert (FILES / "rules" / name).read_text() == text, f"{name}: stale; regenerate as config.toml says"
    out = subprocess.run(["promtool", "check", "rules", str(FILES / "rules" / "recording-rules.yaml"),
                          str(FILES / "rules" / "alerting-rules.yaml")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
