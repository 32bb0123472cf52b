"""The store's bounds: a full store refuses (and the capture counts), old delivered reports make room."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

from ofsre.exporters.pcm import store as store_module
from ofsre.exporters.pcm.store import COLUMNS, ReportStore, deadline_of

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
        assert store._db.execute("SELECT count(*) FROM staged").fetchone() == (0,)
    with ReportStore(tmp_path / "r.db", max_reports=6) as reopened:      # staged reports count after a reopen
        assert reopened.stage([report_row(), report_row()]) == 1


def test_each_write_of_the_capture_is_one_staged_row_moved_in_order(tmp_path):
    rows = [report_row(ts=1_790_000_000.0 + i) for i in range(7)]
    with ReportStore(tmp_path / "r.db") as store:
        for start in range(0, 7, 3):
            store.stage(rows[start:start + 3])
        assert store._db.execute("SELECT count(*) FROM staged").fetchone() == (3,)
        assert store.backlog()["oldest_unsent_ts"] == 1_790_000_000.0
        assert store.promote() == 7
        stored = store._db.execute(f"SELECT {', '.join(COLUMNS)} FROM reports ORDER BY id").fetchall()
    assert stored == rows


def test_promote_moves_a_large_backlog_in_bounded_transactions(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "PROMOTE_ROWS", 4)
    with ReportStore(tmp_path / "r.db") as store:
        for _ in range(5):
            store.stage([report_row() for _ in range(3)])
        commits = []
        original = store._tx

        def counted():
            commits.append(1)
            return original()

        monkeypatch.setattr(store, "_tx", counted)
        assert store.promote() == 15
        assert len(commits) == 5          # 3 reports a batch, at most 4 a transaction (at least one batch)
        assert store.backlog()["unsent"]["private"] == 15 and len(store.pending("private", 100)) == 15


def test_reports_staged_by_an_earlier_version_one_row_each_are_promoted_too(tmp_path):
    old, new = report_row(), report_row()
    with ReportStore(tmp_path / "r.db") as store:
        columns, marks = ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
        store._db.execute(f"INSERT INTO incoming ({columns}) VALUES ({marks})", old)   # an older capture
        store.stage([new])
        assert store.backlog()["unsent"]["private"] == 2
        assert store.promote() == 2
        assert _interaction_ids(store.pending("private", 10)) == [old[8], new[8]]


def _interaction_ids(pending):
    return [json.loads(body)["fapiInteractionId"] for _, body in pending]


class _RunsCode:
    """Pickles as a call to ``os.system``: what a hostile store file could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_staged_batch_that_is_not_plain_data_is_kept_and_never_run_and_the_others_move(tmp_path, capsys):
    """A store file written by someone else: ``ofsre pcm status`` (a real process) promotes what it can."""
    marker = tmp_path / "ran"
    path = tmp_path / "r.db"
    good = [report_row(), report_row()]
    with ReportStore(path) as store:
        store.stage(good[:1])
        for data in (pickle.dumps([_RunsCode(marker)]),                   # code
                     pickle.dumps([(None,) * len(COLUMNS)]),              # rows the table refuses (NOT NULL)
                     pickle.dumps({"not": "rows"}), b"\x80\x04garbage"):      # not rows; not a pickle
            store._db.execute("INSERT INTO staged (private, opendata, first_ts, data) VALUES (1, 0, 0, ?)",
                              (data,))
        store.stage(good[1:])
    done = subprocess.run([sys.executable, "-m", "ofsre", "pcm", "status", "--store", str(path), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert done.stderr.count("cannot be moved") == 4 and "builtins" not in done.stdout
    assert json.loads(done.stdout)["unsent"]["private"] == 6     # the two moved, the four kept and counted
    with ReportStore(path) as store:
        assert _interaction_ids(store.pending("private", 10)) == [good[0][8], good[1][8]]
        assert store._db.execute("SELECT count(*) FROM staged").fetchone() == (4,)


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
