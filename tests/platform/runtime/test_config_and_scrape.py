"""Runtime configuration (TOML, CLI flags, JSON round trip) and the /metrics read-back helpers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ofsre.instrumentation import semconv
from ofsre.platform.runtime.cli import build_config, configure
from ofsre.platform.runtime.config import RuntimeConfig, config_from_dict, config_to_dict, load_toml
from ofsre.platform.runtime.hpa import CPU, MEMORY, ResourceTarget
from ofsre.platform.runtime.scrape import Sample, buckets, group_by, histogram_quantile, total
from ofsre.platform.settings import Settings


def parse_up(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(["up", *argv])


def test_defaults_follow_the_platform_contract(monkeypatch, tmp_path):
    monkeypatch.delenv("OFSRE_DATABASE_URL", raising=False)
    monkeypatch.setenv("OFSRE_DATA_DIR", str(tmp_path))
    cfg = RuntimeConfig()
    assert cfg.data_dir == tmp_path and cfg.gateway_port == 8080 and cfg.queue_backend == "db" and cfg.mtls
    assert cfg.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'ofsre.db'}"
    assert [s.name for s in cfg.services] == ["consents", "accounts", "payments", "worker"]
    assert [s.name for s in cfg.services if s.routed] == ["consents", "accounts", "payments"]
    assert cfg.command[1:4] == ("-m", "ofsre.platform.run", "{service}")
    assert cfg.controller.sync_period == 15 and cfg.scale_down.stabilization_window_seconds == 300
    env = RuntimeConfig(mtls=False).service_env()
    assert env["OFSRE_MTLS"] == "off" and env["OFSRE_QUEUE_BACKEND"] == "db"


@pytest.mark.parametrize("word, on", [("no", False), ("off", False), ("FALSE", False), ("0", False),
                                      ("yes", True), ("on", True), ("of", True), ("", True)])
def test_ofsre_mtls_means_the_same_for_the_runtime_and_the_services(monkeypatch, word, on):
    """``no`` used to leave the runtime's mTLS on while it turned the services' off."""
    monkeypatch.setenv("OFSRE_MTLS", word)
    assert RuntimeConfig().mtls is on
    assert Settings.from_env({"OFSRE_MTLS": word}).mtls is on
    assert ("OFSRE_MTLS" in RuntimeConfig().service_env()) is not on  # what the runtime hands the services


def test_service_hpa_spec_uses_cpu_and_memory_requests():
    svc = RuntimeConfig().service("consents")
    spec = svc.hpa_spec(RuntimeConfig().scale_up, RuntimeConfig().scale_down)
    assert spec.metrics == (ResourceTarget(CPU, 80), ResourceTarget(MEMORY, 80))
    assert svc.requests == {CPU: 0.25, MEMORY: 256 * 2**20}


def test_toml_then_flags(tmp_path):
    toml = tmp_path / "rt.toml"
    toml.write_text('[runtime]\ngateway_port = 9000\nmigrate_command = []\n'
                    '[autoscaler]\nsync_period = 5\nscale_down_stabilization = 60\n'
                    '[services.accounts]\nmax_replicas = 8\ncpu_request = 0.5\n'
                    '[services.gateway]\ncpu_request = 1.0\n')
    cfg = load_toml(toml, RuntimeConfig(data_dir=tmp_path))
    assert cfg.gateway_port == 9000 and cfg.migrate_command is None
    assert cfg.controller.sync_period == 5 and cfg.scale_down.stabilization_window_seconds == 60
    assert cfg.service("accounts").max_replicas == 8 and cfg.service("accounts").cpu_request == 0.5
    assert cfg.service("consents").max_replicas == 4 and cfg.gateway.cpu_request == 1.0

    cfg = build_config(parse_up("--config", str(toml), "--data-dir", str(tmp_path), "--gateway-port", "0",
                                "--max-replicas", "3", "--services", "accounts,worker", "--mtls", "off",
                                "--sync-period", "2", "--scale-down-window", "10"))
    assert cfg.gateway_port == 0 and not cfg.mtls  # flags win over the file
    assert [s.name for s in cfg.services] == ["accounts", "worker"]
    assert all(s.max_replicas == 3 for s in cfg.services)
    assert cfg.service("accounts").cpu_request == 0.5  # the file's per-service setting stays
    assert cfg.controller.sync_period == 2 and cfg.scale_down.stabilization_window_seconds == 10


def test_unknown_service_in_toml_is_an_error(tmp_path):
    toml = tmp_path / "rt.toml"
    toml.write_text("[services.ledger]\nmax_replicas = 2\n")
    with pytest.raises(ValueError, match="ledger"):
        load_toml(toml)


def test_config_json_round_trip(tmp_path):
    cfg = RuntimeConfig(data_dir=tmp_path / "x", migrate_command=None).with_services(replicas=2)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg and isinstance(again.data_dir, Path)


# ---------------------------------------------------------------- /metrics read-back

def s(name: str, value: float, source: str = "a", **labels: str) -> Sample:
    return Sample(name, labels, value, source)


def test_histogram_quantile_interpolates_like_prometheus():
    # 100 observations: 50 ≤ 0.1 s, 90 ≤ 0.5 s, all ≤ 1 s.
    cumulative = [(0.1, 50), (0.5, 90), (1.0, 100), (float("inf"), 100)]
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.95, cumulative) == pytest.approx(0.75)  # halfway through (0.5, 1.0]
    assert histogram_quantile(0.25, cumulative) == pytest.approx(0.05)  # the first bucket starts at 0
    assert histogram_quantile(0.99, [(0.1, 1), (float("inf"), 10)]) == 0.1  # in +Inf: the last finite bound
    assert histogram_quantile(0.95, [(0.1, 0), (float("inf"), 0)]) is None


def test_sums_over_replicas_and_labels():
    name = semconv.HTTP_DURATION.name + "_bucket"
    samples = [s(name, 3, "r1", route="/x", le="0.1"), s(name, 5, "r1", route="/x", le="+Inf"),
               s(name, 1, "r2", route="/x", le="0.1"), s(name, 1, "r2", route="/x", le="+Inf"),
               s(name, 9, "r2", route="/y", le="+Inf")]
    assert buckets(samples, semconv.HTTP_DURATION.name, route="/x") == [(0.1, 4), (float("inf"), 6)]
    requests = semconv.HTTP_REQUESTS.series
    samples = [s(requests, 2, "r1", route="/x", status="200"), s(requests, 3, "r2", route="/x", status="200"),
               s(requests, 1, "r2", route="/x", status="404")]
    assert total(samples, requests, route="/x") == 6
    assert group_by(samples, requests, ("status",)) == {("200",): 5, ("404",): 1}


def test_demo_summary_compares_p95_with_the_catalog_limit():
    from ofsre.platform.runtime.demo import summarise

    pix = "/open-banking/payments/v4/pix/payments"
    balances = "/open-banking/accounts/v2/accounts/{accountId}/balances"
    dur = semconv.HTTP_DURATION.name + "_bucket"
    samples = [
        s(semconv.HTTP_REQUESTS.series, 3, "gw", method="POST", route=pix, status="201"),
        s(dur, 3, "gw", method="POST", route=pix, le="0.25"),
        s(dur, 3, "gw", method="POST", route=pix, le="+Inf"),
        s(semconv.HTTP_REQUESTS.series, 4, "gw", method="GET", route=balances, status="200"),
        s(dur, 0, "gw", method="GET", route=balances, le="1.5"),
        s(dur, 4, "gw", method="GET", route=balances, le="2.5"),
        s(dur, 4, "gw", method="GET", route=balances, le="+Inf"),
        s(semconv.HTTP_REQUESTS.series, 4, "acc", method="GET", route=balances, status="200"),
        s(semconv.QUEUE_CONSUMED.series, 3, "wk", queue="pix-payments", service="worker", backend="db"),
        s(semconv.QUEUE_PUBLISHED.series, 3, "pay", queue="pix-payments", service="payments", backend="db"),
    ]
    status = {"deployments": {"accounts": {"available": 1, "spec_replicas": 1}},
              "hpa": {"accounts": {"current_replicas": 1, "desired_replicas": 1, "min_replicas": 1,
                                   "max_replicas": 4}}}
    text = summarise(samples, {"gw": "gateway", "acc": "accounts", "wk": "worker", "pay": "payments"}, status)
    pix_line = next(line for line in text.splitlines() if pix in line and "p95" in line)
    assert "limit  1500 ms" in pix_line and pix_line.endswith("ok")
    balances_line = next(line for line in text.splitlines() if balances in line and "p95" in line)
    assert balances_line.endswith("OVER")  # every request took between 1.5 and 2.5 s: over alta's 1.5 s
    assert "payments settled (worker acks on pix-payments): 3" in text
    assert "queue pix-payments: published 3, consumed 3, failed 0" in text
    assert "accounts  1 ready of 1  (HPA 1→1 of 1-4)" in text
