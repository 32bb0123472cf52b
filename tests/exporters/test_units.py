"""Small pure pieces of the shipping core: settings, Retry-After, backoff, status classes."""

from __future__ import annotations

import email.utils
import logging
import random

import pytest

from ofsre.exporters._options import ENV_VARS, ShipperOptions, resolve_options
from ofsre.exporters._transport import auth_headers, backoff_delay, is_retryable, retry_after_seconds
from ofsre.exporters.datadog import DATADOG_LIMITS
from ofsre.exporters.loki import LOKI_LIMITS, push_url


def test_arguments_win_over_environment_which_wins_over_defaults(monkeypatch):
    monkeypatch.setenv("OFSRE_LOG_QUEUE_RECORDS", "77")
    monkeypatch.setenv("OFSRE_LOG_OVERFLOW", "drop_oldest")
    opts = resolve_options(LOKI_LIMITS, queue_records=5)
    assert opts.queue_records == 5 and opts.overflow == "drop_oldest"
    assert opts.batch_bytes == 1024 * 1024 and opts.batch_records == LOKI_LIMITS.max_batch_records
    assert resolve_options(DATADOG_LIMITS).batch_records == 1000


def test_a_bad_environment_value_is_logged_and_ignored(monkeypatch, caplog):
    monkeypatch.setenv("OFSRE_LOG_BATCH_WAIT", "soon")
    with caplog.at_level(logging.WARNING, logger="ofsre.exporters"):
        assert resolve_options(LOKI_LIMITS).batch_wait == ShipperOptions.batch_wait
    assert "OFSRE_LOG_BATCH_WAIT" in caplog.text


@pytest.mark.parametrize("bad", [{"batch_records": 1001}, {"batch_bytes": 6_000_000}, {"overflow": "spill"},
                                 {"queue_bytes": 10}, {"batch_wait": -1}, {"nonsense": 1},
                                 {"backoff_initial": 5, "backoff_max": 1}])
def test_a_bad_argument_is_a_definition_error(bad):
    with pytest.raises((ValueError, TypeError)):
        resolve_options(DATADOG_LIMITS, **bad)


def test_every_option_has_an_environment_variable():
    assert set(ENV_VARS) == set(ShipperOptions.__dataclass_fields__)
    assert all(name.startswith("OFSRE_LOG_") for name in ENV_VARS.values())


def test_retry_after_seconds_and_http_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds(email.utils.formatdate(1000.0, usegmt=True), now=990.0) == 10.0
    assert retry_after_seconds(email.utils.formatdate(1000.0, usegmt=True), now=2000.0) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_backoff_is_exponential_with_full_jitter_and_capped():
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 0.5, 30.0, rng) for attempt in range(12) for _ in range(50)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert max(backoff_delay(0, 0.5, 30.0, rng) for _ in range(200)) <= 0.5
    assert max(backoff_delay(10, 0.5, 30.0, rng) for _ in range(200)) > 15   # grew to the cap
    assert min(backoff_delay(10, 0.5, 30.0, rng) for _ in range(200)) < 5    # full jitter reaches low


@pytest.mark.parametrize(("status", "retry"),
                         [(408, True), (429, True), (500, True), (503, True), (400, False),
                          (401, False), (403, False), (404, False), (413, False)])
def test_which_statuses_are_retried(status, retry):
    assert is_retryable(status) is retry


def test_auth_headers_and_push_url():
    assert auth_headers("u", "p", None) == {"Authorization": "Basic dTpw"}
    assert auth_headers("u", "p", "t") == {"Authorization": "Bearer t"}
    assert auth_headers(None, None, "k", token_scheme="ApiKey") == {"Authorization": "ApiKey k"}
    assert auth_headers(None, None, None) == {}
    assert push_url("http://loki:3100/") == "http://loki:3100/loki/api/v1/push"
    assert push_url("http://loki:3100/loki/api/v1/push") == "http://loki:3100/loki/api/v1/push"
