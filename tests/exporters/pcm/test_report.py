"""``ofsre pcm report`` on a generated day with known answers, and ``ofsre pcm status``."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime

import pytest

from ofsre.cli import main
from ofsre.exporters.pcm.compliance import day_report, p95
from ofsre.exporters.pcm.store import BRT

from .conftest import id_of, report_row

DAY = "2026-11-10"
BALANCES = "/open-banking/accounts/v2/accounts/{accountId}/balances"      # alta: 1,500 ms
CONSENT = "/open-banking/consents/v3/consents/{consentId}"                # alta
ACCOUNTS = "/open-banking/accounts/v2/accounts"                           # baixa: 4,000 ms
PIX = "/open-banking/payments/v4/pix/payments"                            # alta
WEBHOOK = "/open-banking/webhook/v1/payments/v4/pix/payments/{paymentId}"


def at(day: str, hh: int, mm: int, ss: int = 0) -> float:
    return datetime.strptime(f"{day} {hh}:{mm}:{ss}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=BRT).timestamp()


def generated_day(store) -> None:
    """The known day. Comments give the answers the assertions expect."""
    rows = []
    # BALANCES latency: 18 × 100 ms, one 1,500 ms, one 9,000 ms → n = 20, rank round(0.95·20) = 19 → p95 =
    # 1,500
    # exactly at the alta limit: passes. Excluded from latency: a 429, a 529, a 423, processTimespan 0,
    # DISCARDED.
    for i, ms in enumerate([100] * 18 + [1500, 9000]):
        rows.append(report_row(ts=at(DAY, 10, i), endpoint=BALANCES, process_ms=ms))
    for status in (429, 529, 423):
        rows.append(report_row(ts=at(DAY, 11, 0), endpoint=BALANCES, status=status, process_ms=60_000))
    rows.append(report_row(ts=at(DAY, 11, 1), endpoint=BALANCES, process_ms=0))
    discarded = report_row(ts=at(DAY, 11, 2), endpoint=BALANCES, process_ms=50_000)
    rows.append(discarded)
    # CONSENT availability: 20 minutes with counted traffic, 19 available → exactly 95 %: passes.
    #   00:00 → 18 × 200, one 422 (success), one 408 (error): 19/20 = exactly 95 % → available
    #   00:01 → 18 × 200, 500, 503: 90 % → unavailable
    #   00:02 … 00:19 → one 200 each; 00:02 also has five 404s and a 401 (not counted)
    #   plus 23:59:30 BRT of the same day (02:59 UTC the next day) replaces 00:19 → still 20 minutes
    for _ in range(18):
        rows.append(report_row(ts=at(DAY, 0, 0, 5), endpoint=CONSENT))
    rows += [report_row(ts=at(DAY, 0, 0, 30), endpoint=CONSENT, status=422),
             report_row(ts=at(DAY, 0, 0, 59), endpoint=CONSENT, status=408, process_ms=15_000)]
    for _ in range(18):
        rows.append(report_row(ts=at(DAY, 0, 1, 10), endpoint=CONSENT))
    rows += [report_row(ts=at(DAY, 0, 1, 20), endpoint=CONSENT, status=500),
             report_row(ts=at(DAY, 0, 1, 40), endpoint=CONSENT, status=503)]
    for minute in range(2, 19):
        rows.append(report_row(ts=at(DAY, 0, minute, 1), endpoint=CONSENT))
    rows += [report_row(ts=at(DAY, 0, 2, 2), endpoint=CONSENT, status=404) for _ in range(5)]
    rows.append(report_row(ts=at(DAY, 0, 2, 3), endpoint=CONSENT, status=401))
    rows.append(report_row(ts=at(DAY, 23, 59, 30), endpoint=CONSENT))
    # ACCOUNTS (baixa, 4,000 ms): 19 minutes, 18 available → 94.74 %: fails availability.
    rows += [report_row(ts=at(DAY, 5, m), endpoint=ACCOUNTS, process_ms=3000) for m in range(18)]
    rows.append(report_row(ts=at(DAY, 5, 30), endpoint=ACCOUNTS, status=502, process_ms=3000))
    # PIX: p95 = 1,801 ms > 1.2 × 1,500 = 1,800 → fails, and the month fails too.
    rows += [report_row(ts=at(DAY, 9, m), endpoint=PIX, method="POST", process_ms=1801) for m in range(3)]
    # A webhook call: no latency figure (excluded by governance), availability still counted.
    rows.append(report_row(ts=at(DAY, 9, 0), endpoint=WEBHOOK, method="POST", process_ms=99_000))
    # Not this day: 00:30 BRT of the next day (03:30 UTC) and a CLIENT report.
    rows.append(report_row(ts=at("2026-11-11", 0, 30), endpoint=CONSENT, status=500))
    rows.append(report_row(ts=at(DAY, 12, 0), endpoint=CONSENT, status=500, role="CLIENT"))
    # BALANCES on the month's earlier days: 8 days within the limit, one at 1,700 ms (over the limit, under
    # 1.2 ×) → with DAY: 9 of 10 days → exactly 90 %, none over 1.2 × → the month passes.
    for d in range(1, 10):
        rows.append(report_row(ts=at(f"2026-11-{d:02d}", 12, 0), endpoint=BALANCES,
                               process_ms=1700 if d == 5 else 900))
    # PIX on 2026-11-01 was fine: the month still fails on DAY's 1.2 × breach.
    rows.append(report_row(ts=at("2026-11-01", 12, 0), endpoint=PIX, method="POST", process_ms=500))
    assert len(store.add(rows)) == len(rows)
    store.deliver([("DISCARDED", "no pair", None, id_of(store, discarded))])


@pytest.fixture
def day(store):
    generated_day(store)
    return {f.endpoint: f for f in day_report(store, DAY).endpoints}


def test_p95_is_the_rank_round_half_up_of_0_95_n():
    assert p95([]) is None
    assert p95([7]) == 7
    assert p95(range(1, 11)) == 10        # 0.95 · 10 = 9.5 → 10 (half up, not to even)
    assert p95(range(1, 31)) == 29        # 28.5 → 29
    assert p95(range(1, 21)) == 19
    assert p95(reversed(range(1, 101))) == 95


def test_a_p95_exactly_at_the_limit_passes_and_exclusions_are_applied(day):
    balances = day[BALANCES]
    assert (balances.tier, balances.limit_ms, balances.major_version) == ("alta", 1500, "v2")
    assert balances.latency_samples == 20
    assert balances.p95_ms == 1500 and balances.latency_ok is True and balances.over_1_2x is False


def test_the_month_rule_90_percent_of_days_and_no_day_over_1_2x(day):
    balances, pix = day[BALANCES], day[PIX]
    assert (balances.month_days_ok, balances.month_days_with_traffic, balances.month_ok) == (9, 10, True)
    assert pix.p95_ms == 1801 and pix.latency_ok is False and pix.over_1_2x is True
    month = (pix.month_days_ok, pix.month_days_with_traffic, pix.month_any_over_1_2x, pix.month_ok)
    assert month == (1, 2, True, False)


def test_a_day_with_exactly_95_percent_available_minutes_and_a_minute_at_exactly_95(day):
    consent = day[CONSENT]
    assert consent.minutes_with_traffic == 20
    assert consent.available_minutes == 19                      # 00:00 at exactly 95 % is available
    assert consent.unavailable_minutes == ["00:01"]
    assert consent.availability == 0.95 and consent.availability_ok is True
    assert consent.availability_all_minutes == pytest.approx(1439 / 1440)
    assert (consent.counted_calls, consent.successes, consent.errors) == (58, 55, 3)   # 404/401 not counted


def test_a_day_just_under_95_percent_fails(day):
    accounts = day[ACCOUNTS]
    assert (accounts.available_minutes, accounts.minutes_with_traffic) == (18, 19)
    assert accounts.availability_ok is False
    assert accounts.p95_ms == 3000 and accounts.latency_ok is True


def test_webhooks_have_no_latency_figure(day):
    webhook = day[WEBHOOK]
    assert webhook.p95_ms is None and webhook.latency_ok is None and webhook.availability_ok is True


def test_ofsre_pcm_report_prints_table_json_and_csv(store, capsys):
    generated_day(store)
    args = ["pcm", "report", "--day", DAY, "--store", str(store.path)]
    assert main(args + ["--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["compliant"] is False
    by = {e["endpoint"]: e for e in document["endpoints"]}
    assert by[CONSENT]["availability"] == 0.95 and by[BALANCES]["p95_ms"] == 1500
    assert main(args + ["--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["endpoint"]: r["unavailable_minutes"] for r in rows}[CONSENT] == "00:01"
    assert main(args) == 0
    table = capsys.readouterr().out
    line = next(line for line in table.splitlines() if line.startswith(PIX))
    assert "1801" in line and "FAIL" in line and "YES" in line
    assert "NOT compliant" in table
    assert main(args + ["--role", "CLIENT", "--format", "json"]) == 0
    client = json.loads(capsys.readouterr().out)
    assert [(e["endpoint"], e["errors"]) for e in client["endpoints"]] == [(CONSENT, 1)]


def test_a_bad_day_is_a_clear_error(store, capsys):
    assert main(["pcm", "report", "--day", "10/11/2026", "--store", str(store.path)]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_ofsre_pcm_status_shows_backlog_deadline_and_risk(store, capsys):
    now = time.time()
    store.add([report_row(ts=now - 60), report_row(ts=now - 30)])
    [delivered] = store.add([report_row(ts=now - 10)])
    store.deliver([("UNPAIRED", "no client report", "r-1", delivered)])
    assert main(["pcm", "status", "--store", str(store.path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["unsent"] == {"private": 2, "opendata": 0} and figures["held"] == 0
    assert 55 <= figures["oldest_unsent_age_s"] < 120
    assert figures["day_counts"]["PENDING"] == 2 and figures["day_counts"]["UNPAIRED"] == 1
    assert 4 * 3600 < figures["seconds_left"] <= 35 * 3600 and figures["risk"] == "ok"
    assert main(["pcm", "status", "--store", str(store.path)]) == 0
    text = capsys.readouterr().out
    assert "2 private, 0 opendata unsent" in text and "risk           ok" in text


def test_status_risk_levels():
    from ofsre.exporters.pcm.cli import risk

    base = {"unsent": {"private": 0, "opendata": 0}, "held": 0, "seconds_left": 3600.0}
    assert risk(base) == "ok"
    assert risk({**base, "unsent": {"private": 1, "opendata": 0}}) == "at risk"
    assert risk({**base, "held": 1, "seconds_left": 80_000}) == "at risk"
    assert risk({**base, "held": 1, "seconds_left": -1}) == "missed"


def test_the_deadline_metrics_come_from_the_store(store, registry):
    from ofsre.exporters.pcm.metrics import StoreCollector

    now = time.time()
    store.add([report_row(ts=now - 100), report_row(ts=now - 50, kind="opendata")])
    StoreCollector(store, clock=lambda: now, registry=registry)
    assert registry.get_sample_value("ofsre_pcm_backlog_reports", {"kind": "private"}) == 1
    assert registry.get_sample_value("ofsre_pcm_backlog_reports", {"kind": "opendata"}) == 1
    assert registry.get_sample_value("ofsre_pcm_oldest_unsent_age_seconds") == pytest.approx(100, abs=0.01)
    assert registry.get_sample_value("ofsre_pcm_day_reports", {"status": "PENDING"}) == 2
    left = registry.get_sample_value("ofsre_pcm_deadline_seconds_left")
    assert 8 * 3600 < left <= 35 * 3600


def test_an_unreadable_store_gives_no_pcm_samples_and_a_counted_error(tmp_path):
    from prometheus_client import REGISTRY, CollectorRegistry

    from ofsre.exporters.pcm.metrics import StoreCollector
    from ofsre.exporters.pcm.store import ReportStore

    store = ReportStore(tmp_path / "r.db")
    store.close()                                   # every query now fails
    registry = CollectorRegistry()
    StoreCollector(store, registry=registry)
    global_before = REGISTRY.get_sample_value("ofsre_telemetry_errors_total", {"component": "pcm"}) or 0
    assert registry.get_sample_value("ofsre_pcm_held_reports") is None
    # Counted in the registry the collector serves, not the global one; reading it is a second
    # scrape, so a second error.
    assert registry.get_sample_value("ofsre_telemetry_errors_total", {"component": "pcm"}) == 2
    global_after = REGISTRY.get_sample_value("ofsre_telemetry_errors_total", {"component": "pcm"}) or 0
    assert global_after == global_before
