from __future__ import annotations

import pytest

from ofsre.instrumentation.catalog import CatalogError, load_catalog, parse_catalog, regulatory_buckets


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_tiers_carry_the_regulatory_limits(catalog):
    assert {n: t.p95_ms for n, t in catalog.tiers.items()} == {
        "alta": 1500, "media-alta": 1500, "media": 2000, "baixa": 4000}


@pytest.mark.parametrize(("method", "route", "tier", "tpm"), [
    ("POST", "/open-banking/consents/v3/consents", "alta", None),
    ("POST", "/open-banking/consents/v3/consents/{consentId}/extends", "baixa", None),
    ("GET", "/open-banking/accounts/v2/accounts", "baixa", 1000),
    ("GET", "/open-banking/accounts/v2/accounts/{accountId}/balances", "alta", 2500),
    ("GET", "/open-banking/credit-cards-accounts/v2/accounts/{creditCardAccountId}", "media-alta", 2000),
    ("GET", "/open-banking/loans/v2/contracts", "media", 1500),
    ("POST", "/open-banking/payments/v4/pix/payments", "alta", None),
    ("GET", "/open-banking/opendata-loans/v1/personal-loans", "baixa", 500),
])
def test_lookup_by_template(catalog, method, route, tier, tpm):
    e = catalog.lookup(method, route)
    assert e is not None and e.tier.name == tier and e.tpm == tpm


def test_match_raw_paths(catalog):
    e = catalog.match("GET", "/open-banking/accounts/v2/accounts/123/balances")
    assert e.route == "/open-banking/accounts/v2/accounts/{accountId}/balances"
    # literal segments win over parameters; trailing slash and query string ignored
    assert catalog.match("GET", "/open-banking/accounts/v2/accounts/").route.endswith("/accounts")
    assert catalog.match("GET", "/open-banking/accounts/v2/accounts?page=2").route.endswith("/accounts")
    assert catalog.match("POST", "/open-banking/accounts/v2/accounts") is None
    assert catalog.match("GET", "/open-banking/accounts/v2/accounts/1/2/3") is None
    assert catalog.match("GET", "/etc/passwd") is None


def test_alta_tpm_by_active_consents(catalog):
    assert catalog.alta_tpm_for_active_consents(500_000) == 2500
    assert catalog.alta_tpm_for_active_consents(2_000_000) == 5000
    assert catalog.alta_tpm_for_active_consents(6_000_000) == 10000
    assert catalog.alta_tpm_for_active_consents(7_000_000) == 12000
    assert catalog.alta_tpm_for_active_consents(8_000_001) == 14000


def test_buckets_hold_every_limit_exactly(catalog):
    buckets = regulatory_buckets(catalog)
    for t in catalog.tiers.values():
        assert t.p95_seconds in buckets
    assert list(buckets) == sorted(set(buckets))


def _raw(**over):
    raw = {"tiers": {"alta": {"p95_ms": 1500, "tpm": 2500}},
           "slo": {"latency_objective": 0.95, "availability_objective": 0.995,
                   "availability_daily_objective": 0.95,
                   "availability_window_days": 90, "latency_window_days": 30},
           "family": [{"api": "x", "version": "1.0.0", "base": "/x/v1",
                       "endpoints": [["GET", "/a", "alta"]]}]}
    raw.update(over)
    return raw


def test_parse_minimal():
    c = parse_catalog(_raw())
    assert c.lookup("GET", "/x/v1/a").tpm == 2500


@pytest.mark.parametrize(("family", "message"), [
    ({"api": "x", "version": "1", "base": "/x", "endpoints": [["GET", "/a", "nope"]]}, "unknown tier 'nope'"),
    ({"api": "x", "version": "1", "base": "/x", "endpoints": [["get", "/a", "alta"]]}, "unknown method"),
    ({"api": "x", "version": "1", "base": "/x", "endpoints": [["GET", "a", "alta"]]}, "must start with '/'"),
    ({"api": "x", "version": "1", "base": "/x", "endpoints": [["GET", "/a", "alta"], ["GET", "/a", "alta"]]},
     "duplicate"),
    ({"api": "x", "version": "1", "base": "/x", "endpoints": [["GET", "/a", "alta", -3]]}, "tpm must be"),
    ({"api": "x", "version": "1", "endpoints": []}, "missing 'base'"),
])
def test_bad_rows_name_themselves(family, message):
    with pytest.raises(CatalogError, match=message):
        parse_catalog(_raw(family=[family]))


def test_bad_file_is_a_clear_error(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[tiers\n")
    with pytest.raises(CatalogError, match=str(p.name)):
        load_catalog(p)


def test_the_compiled_matcher_finds_what_the_trie_walk_finds():
    """RouteMatcher.match answers most paths with its compiled expression; for any table and
    path (empty segments, trailing slashes, queries, literals next to parameters, regex
    metacharacters, the catalog's own templates) it must give the trie walk's answer."""
    import random

    from ofsre.instrumentation.catalog import RouteMatcher, _segments

    rng = random.Random(10)
    words = ["a", "b", "v2", "{id}", "{x}", "q.x", "a+", "(c)", "a?b", ""]
    for _ in range(600):
        matcher = RouteMatcher()
        templates = ["/" + "/".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
                     for _ in range(rng.randint(1, 12))]
        for template in templates:
            matcher.add(template, template)
        for _ in range(40):
            path = "/" + "/".join(rng.choice(words[:-2] + ["zz", "7", "", "{id}"])
                                  for _ in range(rng.randint(0, 5)))
            path += rng.choice(["", "/", "//", "?q=1", "/?q=/a/b", "?"])
            assert matcher.match(path) == matcher._walk(matcher._root, _segments(path), 0), (templates, path)
    catalog = load_catalog()
    matcher = RouteMatcher()
    for endpoint in catalog:
        matcher.add(endpoint.route, endpoint.route)
    for endpoint in catalog:
        path = endpoint.route.replace("{", "x").replace("}", "")
        assert matcher.match(path) == endpoint.route == matcher._walk(matcher._root, _segments(path), 0)
