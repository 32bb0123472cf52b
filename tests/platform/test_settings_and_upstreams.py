"""Configuration from the environment, the upstreams file watcher, the window counter, the runner."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from pathlib import Path

import pytest

from ofsre.platform import run
from ofsre.platform.gateway.limits import WindowCounter
from ofsre.platform.gateway.upstreams import Upstreams
from ofsre.platform.settings import Settings, parse_upstreams


def test_defaults_point_at_a_local_sqlite_file():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///var/ofsre.db"
    assert settings.queue_backend == "db" and settings.mtls is True and settings.gateway_tps_limit is None
    assert settings.client_cert_header == "x-ssl-client-cert"


def test_every_variable_is_read():
    settings = Settings.from_env({
        "OFSRE_DATABASE_URL": "postgresql+asyncpg://u@h/d", "OFSRE_DATA_DIR": "/tmp/x",
        "OFSRE_QUEUE_BACKEND": "sqs",
        "OFSRE_UPSTREAMS": '{"accounts": ["http://a:1/", "http://b:2"]}',
        "OFSRE_UPSTREAMS_FILE": "/tmp/u.json",
        "OFSRE_GATEWAY_TPS_LIMIT": "450", "OFSRE_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
        "OFSRE_CLIENT_CERT_HEADER": "X-Client-Cert", "OFSRE_CLIENT_CA_FILE": "/ca.pem", "OFSRE_MTLS": "off",
        "OFSRE_TLS_CERT_FILE": "/c.pem", "OFSRE_TLS_KEY_FILE": "/k.pem", "OFSRE_SETTLEMENT_LATENCY_MS": "5",
        "OFSRE_SETTLEMENT_FAILURE_RATE": "0.25", "OFSRE_WORKER_CONCURRENCY": "3",
        "OFSRE_SIMULATION_ROUTES": "no", "OFSRE_SHUTDOWN_TIMEOUT_S": "7.5", "OFSRE_DB_POOL_SIZE": "2"})
    assert settings.database_url == "postgresql+asyncpg://u@h/d" and settings.data_dir == Path("/tmp/x")
    assert settings.upstreams == {"accounts": ("http://a:1", "http://b:2")}
    assert settings.upstreams_file == Path("/tmp/u.json") and settings.gateway_tps_limit == 450
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),
                                        ipaddress.ip_network("127.0.0.1/32"))
    assert settings.client_cert_header == "x-client-cert" and settings.mtls is False
    settlement = (settings.settlement_latency_ms, settings.settlement_failure_rate,
                  settings.worker_concurrency)
    assert settlement == (5, 0.25, 3)
    assert settings.simulation_routes is False and settings.shutdown_timeout_s == 7.5
    assert settings.db_pool_size == 2
    assert settings.queue_backend == "sqs" and settings.tls_key_file == Path("/k.pem")


@pytest.mark.parametrize("name, value, field, default", [
    ("OFSRE_SETTLEMENT_FAILURE_RATE", "1.5", "settlement_failure_rate", 0.0),
    ("OFSRE_GATEWAY_TPS_LIMIT", "lots", "gateway_tps_limit", None),
    ("OFSRE_UPSTREAMS", "{not json", "upstreams", {}),
    ("OFSRE_UPSTREAMS", '{"accounts": "ftp://x"}', "upstreams", {}),
    ("OFSRE_TRUSTED_PROXIES", "not-an-ip", "trusted_proxies", ()),
    ("OFSRE_SIMULATION_ROUTES", "maybe", "simulation_routes", False),
    ("OFSRE_MAX_BODY_BYTES", "1MB", "max_body_bytes", 1 << 20),
    ("OFSRE_BODY_TIMEOUT_S", "soon", "body_timeout_s", 10.0),
])
def test_a_bad_value_is_logged_and_the_default_used(caplog, name, value, field, default):
    with caplog.at_level(logging.WARNING, logger="ofsre.platform.settings"):
        settings = Settings.from_env({name: value})
    assert getattr(settings, field) == default
    assert name in caplog.text


def test_mtls_is_only_off_when_clearly_said_so():
    assert Settings.from_env({"OFSRE_MTLS": "of"}).mtls is True
    assert Settings.from_env({"OFSRE_MTLS": "FALSE"}).mtls is False


def test_parse_upstreams_rejects_non_objects():
    with pytest.raises(ValueError):
        parse_upstreams("[1, 2]")


# --- upstreams file --------------------------------------------------------------------------------

def _write(path: Path, table: dict, mtime_ns: int) -> None:
    path.write_text(json.dumps(table))
    os.utime(path, ns=(mtime_ns, mtime_ns))  # explicit: no dependence on the file system's clock


def test_the_upstreams_file_is_reread_when_it_changes(tmp_path, caplog):
    path = tmp_path / "upstreams.json"
    ups = Upstreams({"consents": ("http://static:1",)}, path)
    assert ups.table == {"consents": ("http://static:1",)}  # no file yet
    _write(path, {"accounts": ["http://a:1", "http://a:2"]}, 1_000_000_000)
    assert ups.reload_if_changed() is True
    assert ups.table == {"consents": ("http://static:1",), "accounts": ("http://a:1", "http://a:2")}
    assert ups.reload_if_changed() is False  # unchanged
    assert [ups.order("accounts")[0] for _ in range(3)] == ["http://a:1", "http://a:2", "http://a:1"]
    _write(path, {"accounts": ["http://a:3"]}, 2_000_000_000)
    assert ups.reload_if_changed() and ups.order("accounts") == ("http://a:3",)
    with caplog.at_level(logging.WARNING, logger="ofsre.platform.gateway"):
        path.write_text("{broken")
        os.utime(path, ns=(3_000_000_000, 3_000_000_000))
        assert ups.reload_if_changed() is False
    assert ups.order("accounts") == ("http://a:3",) and "ignoring upstreams file" in caplog.text


async def test_the_watcher_picks_up_changes_in_the_background(tmp_path):
    path = tmp_path / "upstreams.json"
    _write(path, {"payments": ["http://p:1"]}, 1_000_000_000)
    ups = Upstreams(None, path)
    task = asyncio.create_task(ups.watch(interval_s=0.01))
    try:
        _write(path, {"payments": ["http://p:2"]}, 2_000_000_000)
        for _ in range(500):
            if ups.order("payments") == ("http://p:2",):
                break
            await asyncio.sleep(0.01)
        assert ups.order("payments") == ("http://p:2",)
    finally:
        task.cancel()


# --- window counter --------------------------------------------------------------------------------

def test_window_counter_uses_fixed_clock_windows():
    now = [59.9]
    counter = WindowCounter(60, clock=lambda: now[0])
    assert [counter.hit("k", 2) for _ in range(3)] == [True, True, False]
    assert counter.seconds_left() == 1
    now[0] = 60.0  # :00.000 of the next minute: a fresh count, however close to the last hit
    assert counter.hit("k", 2) is True and counter.seconds_left() == 60
    assert counter.hit("other", 1) is True and counter.hit("other", 1) is False


# --- runner ----------------------------------------------------------------------------------------

def test_runner_rejects_unknown_services():
    with pytest.raises(SystemExit):
        run.main(["billing"])
    with pytest.raises(ValueError):
        run.create_app("billing")


async def test_migrate_is_idempotent(database_url, tmp_path):
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    await run.migrate(settings)  # the session fixture already ran it once
    await run.migrate(settings)


async def test_migrate_creates_a_sqlite_database(tmp_path):
    settings = Settings(data_dir=tmp_path / "state")
    await run.migrate(settings)
    assert (tmp_path / "state" / "ofsre.db").exists()
