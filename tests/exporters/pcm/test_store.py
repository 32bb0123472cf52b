"""The store's bounds: a full store refuses (and the capture counts), old delivered reports make room."""

from __future__ import annotations

import time

from ofsre.exporters.pcm.store import ReportStore, deadline_of

from .conftest import report_row


def test_a_full_store_refuses_and_old_delivered_reports_are_pruned_first(tmp_path):
    with ReportStore(tmp_path / "r.db", max_reports=10, retention_days=40) as store:
        old = [report_row(ts=time.time() - 50 * 86400) for _ in range(4)]
        assert len(store.add(old)) == 4
        assert len(store.add([report_row() for _ in range(8)])) == 6        # full at 10
        assert len(store.add([report_row()])) == 0
        ids = list(range(1, 5))
        store.deliver([("ACCEPTED", None, None, i) for i in ids[:3]])      # three old ones delivered
        assert len(store.add([report_row() for _ in range(5)])) == 3        # pruned: room for three
        # the delivered ones pruned
        assert store.counts_by_state() == {"pending": 10, "delivered": 0, "held": 0}
    with ReportStore(tmp_path / "r.db", max_reports=10) as reopened:      # the count survives a reopen
        assert len(reopened.add([report_row()])) == 0


def test_staged_reports_count_as_unsent_until_promoted_into_the_indexed_table(tmp_path):
    with ReportStore(tmp_path / "r.db", max_reports=5) as store:
        assert store.stage([report_row() for _ in range(3)] + [report_row(kind="opendata")]) == 4
        assert store.backlog()["unsent"] == {"private": 3, "opendata": 1}
        assert store.counts_by_state()["pending"] == 0 and store.pending("private", 10) == []
        assert store.stage([report_row(), report_row()]) == 1               # the bound counts staged rows
        assert store.promote() == 5 and store.promote() == 0
        assert len(store.pending("private", 10)) == 4
        assert store.backlog()["unsent"] == {"private": 4, "opendata": 1}
        assert store._db.execute("SELECT count(*) FROM incoming").fetchone() == (0,)


def test_the_deadline_is_8_am_brasilia_the_next_day():
    assert deadline_of("2026-11-10") == 1794394800.0   # 2026-11-11T11:00:00Z


def test_a_store_full_in_the_capture_is_counted(tmp_path, registry):
    from ofsre.instrumentation.catalog import load_catalog
    from ofsre.instrumentation.pcm import SERVER, PcmCapture

    path = tmp_path / "r.db"
    ReportStore(path, max_reports=5_000_000).close()
    capture = PcmCapture("gateway", org_id="us", store=path, registry=registry, flush_interval=60)
    capture._open_store = lambda: ReportStore(path, max_reports=2)
    entry = load_catalog().lookup("GET", "/open-banking/accounts/v2/accounts")
    try:
        for _ in range(3):
            capture._put((SERVER, entry, 200, time.time(), 0.1, "iid", "them", "us", None, None, None, None))
        assert capture.flush(5)
    finally:
        capture.close()
    assert registry.get_sample_value("ofsre_pcm_reports_dropped_total",
                                     {"service": "gateway", "reason": "store_full"}) == 1
    assert registry.get_sample_value("ofsre_pcm_reports_captured_total",
                                     {"service": "gateway", "role": "SERVER"}) == 2
