"""Thresholds come from the catalog; 529 is capacity, a 429 must be justified by the suite's own count."""

from __future__ import annotations

from ofsre.instrumentation.catalog import load_catalog
from ofsre.loadtests.thresholds import (
    CAPACITY_SUFFIX,
    TPM_SUFFIX,
    RouteStats,
    Thresholds,
    TpmLedger,
    evaluate,
)

CATALOG = load_catalog()
BALANCES = "/open-banking/accounts/v2/accounts/{accountId}/balances"     # alta: 1,500 ms
ACCOUNTS = "/open-banking/accounts/v2/accounts"                           # baixa: 4,000 ms, TPM 1,000
CONSENTS = "/open-banking/consents/v3/consents"                           # no TPM limit


def test_p95_is_judged_against_the_routes_tier_limit_from_the_catalog():
    alta = CATALOG.lookup("GET", BALANCES).p95_ms
    baixa = CATALOG.lookup("GET", ACCOUNTS).p95_ms
    ok = evaluate([RouteStats("GET", BALANCES, 100, 0, alta - 1),
                   RouteStats("GET", ACCOUNTS, 100, 0, baixa - 1)])
    assert ok.passed and [r["tier"] for r in ok.routes] == ["alta", "baixa"]
    # The same latency passes on a baixa route and fails on an alta one.
    slow = evaluate([RouteStats("GET", BALANCES, 100, 0, alta + 100),
                     RouteStats("GET", ACCOUNTS, 100, 0, alta + 100)])
    assert len(slow.violations) == 1
    assert BALANCES in slow.violations[0] and "alta" in slow.violations[0] and f"{alta}" in slow.violations[0]


def test_a_route_with_too_few_answers_is_not_judged_and_the_margin_scales_the_limit():
    alta = CATALOG.lookup("GET", BALANCES).p95_ms
    assert evaluate([RouteStats("GET", BALANCES, 5, 0, alta * 2)]).passed
    margin = evaluate([RouteStats("GET", BALANCES, 100, 0, alta * 0.9)], thresholds=Thresholds(p95_scale=0.8))
    assert not margin.passed and "1200 ms" in margin.violations[0]


def test_the_error_budget_is_the_catalogs_availability_objective():
    budget = 1 - CATALOG.slo.availability_objective
    rows = [RouteStats("GET", ACCOUNTS, 1000, int(1000 * budget), 100.0)]
    assert evaluate(rows).passed
    over = evaluate([RouteStats("GET", ACCOUNTS, 1000, int(1000 * budget) + 1, 100.0)])
    assert not over.passed and "error rate" in over.violations[0]
    assert evaluate(rows, thresholds=Thresholds(max_error_rate=0.0)).violations


def test_529_and_justified_429_are_reported_not_errors_and_not_latency():
    rows = [RouteStats("GET", ACCOUNTS, 100, 0, 50.0),
            RouteStats("GET", ACCOUNTS + CAPACITY_SUFFIX, 40, 0, 9000.0),
            RouteStats("GET", ACCOUNTS + TPM_SUFFIX, 7, 0, 9000.0)]
    out = evaluate(rows)
    assert out.passed and out.capacity_answers == 40 and out.tpm_answers == 7 and out.failures == 0
    assert [r["route"] for r in out.routes] == [ACCOUNTS]


def test_no_request_at_all_fails():
    assert evaluate([]).violations == ["no request was made"]


def test_the_ledger_justifies_a_429_only_past_the_limit_in_the_clock_minute():
    ledger = TpmLedger(CATALOG)
    limit = CATALOG.lookup("GET", ACCOUNTS).tpm
    t0 = 1_700_000_040.0  # 40 s into a minute
    counts = [ledger.count("org-a", "GET", ACCOUNTS, t0 + i * 0.001) for i in range(limit + 1)]
    assert counts[-1] == limit + 1
    assert not ledger.justified("org-a", "GET", ACCOUNTS, limit, t0)
    assert ledger.justified("org-a", "GET", ACCOUNTS, limit + 1, t0)
    # Another origin has its own count; an endpoint without a TPM limit never justifies a 429.
    assert ledger.count("org-b", "GET", ACCOUNTS, t0) == 1
    assert not ledger.justified("org-a", "POST", CONSENTS, 10**6, t0)
    # A new minute starts from zero; just after the boundary the previous minute still counts.
    next_minute = (t0 // 60 + 1) * 60 + 0.5
    assert ledger.count("org-a", "GET", ACCOUNTS, next_minute) == 1
    assert ledger.justified("org-a", "GET", ACCOUNTS, 1, next_minute)
    assert not ledger.justified("org-a", "GET", ACCOUNTS, 1, next_minute + 5)
