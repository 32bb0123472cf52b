"""The generated rules: promtool check and unit tests, golden files, schemas, config errors, the CLI.

Real tools: ``promtool`` (Debian's ``prometheus`` package) checks and unit-tests the files
``ofsre alerts build`` writes; ``amtool`` (``prometheus-alertmanager``) checks the example
Alertmanager config; the PrometheusRule is validated against prometheus-operator's CRD schema
vendored in ``shared/schemas``. ``make test`` installs both packages when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from ofsre.alerts import build
from ofsre.alerts.config import ConfigError, MonitoringConfig, config_from_dict, load_config
from ofsre.alerts.rules import RUNBOOKS, alert_groups, all_alerts
from ofsre.alerts.sli import WINDOWS, Records, recording_groups

from . import promtool_cases

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
CRD = (REPO.parent / "shared" / "schemas" / "kubernetes" / "crds" / "monitoring.coreos.com"
       / "prometheusrule_v1.json")
UPDATE = os.environ.get("OFSRE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    build.write_all(MonitoringConfig(), out)
    return out


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_promtool_check_rules_is_clean(built):
    for name in ("recording-rules.yaml", "alerting-rules.yaml"):
        out = _run("promtool", "check", "rules", str(built / name))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout and "WARNING" not in out.stdout + out.stderr


def test_promtool_unit_tests_pass(built):
    suite = promtool_cases.suite(["recording-rules.yaml", "alerting-rules.yaml"])
    (built / "tests.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    out = _run("promtool", "test", "rules", "tests.yaml", cwd=built)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_can_fail(built):
    """The suite is not vacuous: a changed annotation makes promtool fail."""
    suite = promtool_cases.suite(["recording-rules.yaml", "alerting-rules.yaml"])
    first = next(t for t in suite["tests"] if any(a["exp_alerts"] for a in t["alert_rule_test"]))
    case = next(a for a in first["alert_rule_test"] if a["exp_alerts"])
    case["exp_alerts"][0]["exp_annotations"]["summary"] += " (changed)"
    (built / "broken.yaml").write_text(yaml.safe_dump({**suite, "tests": [first]}, sort_keys=False))
    out = _run("promtool", "test", "rules", "broken.yaml", cwd=built)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    names = {a.name for a in all_alerts(MonitoringConfig())}
    fires, quiet = set(), set()
    for t in promtool_cases.TESTS:
        for case in t["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    assert names - fires == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a must-not-fire case"
    # Each burn window fires alone at least once above its boundary and stays quiet below it.
    windows = {tuple(a["exp_labels"][k] for k in ("long_window", "short_window"))
               for t in promtool_cases.TESTS for c in t["alert_rule_test"]
               if c["alertname"].endswith("BudgetBurn") for a in c["exp_alerts"]}
    assert windows == {(w.long, w.short) for w in MonitoringConfig().burn_windows}


def test_every_alert_carries_severity_summary_description_runbook_and_dashboard():
    cfg = MonitoringConfig()
    for group in alert_groups(cfg):
        assert group["name"].startswith("ofsre-") and group["name"].endswith(".alerts")
        for rule in group["rules"]:
            assert rule["alert"].startswith("Ofsre") and rule["alert"][5].isupper()
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            ann = rule["annotations"]
            assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}
            assert "{{" not in ann["summary"] and "{{" in ann["description"]
            runbook = RUNBOOKS / ann["runbook_url"].rsplit("/", 1)[1]
            assert runbook.is_file(), f"{rule['alert']}: no runbook {runbook}"
            text = runbook.read_text()
            for section in ("## What it means", "## How to confirm", "## What to do"):
                assert section in text, f"{runbook.name}: missing {section!r}"


def test_no_orphan_runbooks():
    names = {a.name for a in all_alerts(MonitoringConfig())}
    assert {p.stem for p in RUNBOOKS.glob("*.md")} == names


def test_recording_rules_cover_every_window_with_level_metric_operation_names():
    rules = [r for g in recording_groups(MonitoringConfig()) for r in g["rules"]]
    keyed = [(r["record"], tuple(sorted(r.get("labels", {}).items()))) for r in rules]
    assert len(keyed) == len(set(keyed))
    records = [r["record"] for r in rules]
    for w in WINDOWS:
        for make in (Records.requests, Records.counted, Records.errors, Records.error_ratio,
                     Records.latency_total, Records.latency_good, Records.latency_ratio):
            assert make(w) in records
    assert all(len(r.split(":")) == 3 for r in records)


def test_long_windows_are_ratios_of_sums_never_averages_of_ratios():
    for g in recording_groups(MonitoringConfig()):
        for r in g["rules"]:
            assert "avg_over_time" not in r["expr"], r["record"]
            if r["record"].endswith("ratio_rate3d"):
                assert r["expr"].split("/")[0].strip().endswith(":rate3d")


def test_latency_buckets_use_the_exact_le_labels_the_services_expose():
    from prometheus_client import CollectorRegistry, Histogram

    from ofsre.instrumentation import semconv

    reg = CollectorRegistry()
    Histogram("x", "x", buckets=semconv.HTTP_DURATION.histogram_buckets(), registry=reg).observe(0.1)
    exposed = {s.labels["le"] for m in reg.collect() for s in m.samples if "le" in s.labels}
    expr = next(r["expr"] for g in recording_groups(MonitoringConfig()) for r in g["rules"]
                if r["record"] == Records.latency_good("5m"))
    used = {part.split('"')[1] for part in expr.split("le=")[1:]}
    assert used == {"1.5", "2.0", "4.0"} and used <= exposed


def test_prometheusrule_validates_against_the_operator_crd(built):
    schema = json.loads(CRD.read_text())
    doc = yaml.safe_load((built / "prometheusrule.yaml").read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    plain = [yaml.safe_load((built / n).read_text())["groups"] for n in ("recording-rules.yaml",
                                                                         "alerting-rules.yaml")]
    assert doc["spec"]["groups"] == plain[0] + plain[1]


def test_amtool_accepts_the_alertmanager_example(built):
    amtool = shutil.which("amtool")
    assert amtool, "amtool missing: make test installs Debian's prometheus-alertmanager"
    out = _run(amtool, "check-config", str(built / "alertmanager.example.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 inhibit rules" in out.stdout


def test_generated_files_match_the_golden_copies(built):
    """Golden snapshots: a change to the rules is a reviewed diff (OFSRE_UPDATE_GOLDEN=1 rewrites them)."""
    for path in sorted(built.glob("*.y*ml")):
        if path.name in ("tests.yaml", "broken.yaml"):
            continue
        golden = GOLDEN / path.name
        if UPDATE:
            GOLDEN.mkdir(exist_ok=True)
            golden.write_text(path.read_text())
        assert golden.exists(), f"no golden copy of {path.name}: run with OFSRE_UPDATE_GOLDEN=1"
        assert path.read_text() == golden.read_text(), f"{path.name} differs from tests/alerts/golden/"


def test_output_is_deterministic_and_says_do_not_edit(tmp_path):
    a, b = build.render_all(MonitoringConfig()), build.render_all(MonitoringConfig())
    assert a == b
    import ofsre

    for text in a.values():
        assert (text.startswith(f"# Generated by ofsre {ofsre.__version__}")
                and "DO NOT EDIT" in text.splitlines()[0])


# ----------------------------------------------------------------------------- config


def test_config_overrides_selectors_objectives_and_for(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('namespace = "prod"\navailability_objective = 0.999\nteam = "pix"\n'
                 'dashboard_base_url = "https://grafana.example/d"\n'
                 '[alert_for]\nOfsreHPAAtMaxReplicas = "30m"\n')
    cfg = load_config(f)
    rules = build.render_all(cfg)
    recording = rules["recording-rules.yaml"]
    assert 'namespace="prod"' in recording and 'namespace="ofsre"' not in recording
    groups = {r["alert"] + r["labels"].get("long_window",
                                           ""): r for g in alert_groups(cfg) for r in g["rules"]}
    assert groups["OfsreAvailabilityBudgetBurn1h"]["expr"].startswith(
        f"{Records.error_ratio('1h')} > 0.0144\n")  # 14.4 × (1 − 0.999)
    assert groups["OfsreHPAAtMaxReplicas"]["for"] == "30m"
    assert groups["OfsreHPAAtMaxReplicas"]["labels"]["team"] == "pix"
    assert groups["OfsreHPAAtMaxReplicas"]["annotations"]["dashboard_url"].startswith(
        "https://grafana.example/d/ofsre-autoscaling/")


@pytest.mark.parametrize(("data", "message"), [
    ({"namespce": "x"}, "unknown key 'namespce'"),
    ({"availability_objective": 1.5}, "availability_objective: must be between 0 and 1"),
    ({"availability_objective": "high"}, "availability_objective: expected float, not str"),
    ({"min_requests": -1}, "min_requests: must not be negative"),
    ({"services": "payments"}, "services: a list of strings"),
    ({"workload_regex": "payments"}, "workload_regex: must contain '{service}'"),
    ({"alert_for": {"OfsreHPAAtMaxReplicas": "soon"}},
     "alert_for.OfsreHPAAtMaxReplicas: 'soon' is not a Prometheus duration"),
    ({"burn_windows": [{"long": "1h", "short": "5m"}]},
     "burn_windows[0]: needs long, short, factor and severity"),
    ({"burn_windows": [{"long": "1h", "short": "5m", "factor": 14.4, "severity": "page"}]},
     "burn_windows: severity 'page' is not critical, warning or info"),
])
def test_a_bad_config_key_or_value_is_a_clear_error(data, message):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, "m.toml")
    assert message in str(exc.value) and str(exc.value).startswith("m.toml: ")


def test_alert_for_naming_an_unknown_alert_is_an_error():
    with pytest.raises(ConfigError, match="alert_for: unknown alert 'OfsreNope'"):
        alert_groups(config_from_dict({"alert_for": {"OfsreNope": "5m"}}))


def test_cli_builds_the_files_and_reports_a_bad_config(tmp_path):
    ofsre = [sys.executable, "-m", "ofsre"]
    out = _run(*ofsre, "alerts", "build", "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "alerting-rules.yaml", "alertmanager.example.yml", "prometheusrule.yaml", "recording-rules.yaml"]
    bad = tmp_path / "bad.toml"
    bad.write_text("min_requests = 'many'\n")
    out = _run(*ofsre, "alerts", "build", "--out", str(tmp_path / "x"), "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip() == f"ofsre alerts: {bad}: min_requests: expected int, not str 'many'"
    (tmp_path / "file").write_text("")
    out = _run(*ofsre, "alerts", "build", "--out", str(tmp_path / "file"))
    assert out.returncode == 1 and out.stderr.startswith(f"ofsre alerts: cannot write {tmp_path / 'file'}")
    (tmp_path / "broken.toml").write_text("namespace = \n")
    out = _run(*ofsre, "alerts", "build", "--out", str(tmp_path / "x"), "--config",
               str(tmp_path / "broken.toml"))
    assert out.returncode == 2 and "not valid TOML" in out.stderr
