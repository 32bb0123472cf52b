"""The sender against the local PCM: every report delivered once and classified, whatever the PCM answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from ofsre.exporters.pcm.mock import Reply
from ofsre.exporters.pcm.sender import Sender

from .conftest import id_of, interaction_of, report_row, sender_options


def fill(store, count: int, **kwargs) -> list[tuple]:
    rows = [report_row(ts=time.time() - count + i, **kwargs) for i in range(count)]
    for start in range(0, count, 5000):
        assert len(store.add(rows[start:start + 5000])) == len(rows[start:start + 5000])
    return rows


def test_every_report_is_delivered_exactly_once_with_its_result(store, pcm, make_sender, registry):
    rows = fill(store, 12_000) + fill(store, 30, kind="opendata")
    sender = make_sender()
    assert sender.drain(30)
    assert pcm.received == Counter({interaction_of(r): 1 for r in rows})
    # at most pcm_max_reports (5,000) per request, private and open data to their own endpoints
    report_requests = [r for r in pcm.requests if r[0] != "token"]
    assert [r[2] for r in report_requests if r[0] == "private"] == [5000, 5000, 2000]
    assert [r[2] for r in report_requests if r[0] == "opendata"] == [30]
    assert store.counts_by_state() == {"pending": 0, "delivered": 12_030, "held": 0}
    assert {r["result"] for r in store.results(limit=20_000)} == {"ACCEPTED"}
    assert pcm.token_requests == 1   # the token is cached across batches
    assert registry.get_sample_value("ofsre_pcm_report_results_total",
                                     {"kind": "private", "status": "ACCEPTED"}) == 12_000
    # a second drain sends nothing again
    assert sender.drain(5)
    assert len([r for r in pcm.requests if r[0] != "token"]) == len(report_requests)


def test_207_partial_results_are_stored_per_report_and_queryable(store, pcm, make_sender):
    rows = fill(store, 8)
    statuses = ("ACCEPTED", "UNPAIRED", "PAIRED_INCONSISTENT", "SINGLE")
    pcm.script(Reply(207, statuses=statuses))
    assert make_sender().drain(10)
    for i, row in enumerate(rows):
        stored = store.get(id_of(store, row))
        assert stored["state"] == "delivered"
        assert stored["result"] == statuses[i % 4]
        assert (stored["message"] is None) == (statuses[i % 4] == "ACCEPTED")
        assert stored["result_id"]
    assert store.day_status_counts(rows[0][2])["UNPAIRED"] == 2
    assert [r["fapiInteractionId"] for r in store.results(result="SINGLE")] == [rows[7][8], rows[3][8]]


def test_a_report_the_pcm_finds_invalid_is_classified_discarded_with_the_reason(store, pcm, make_sender):
    row = list(report_row())
    row[9] = None                                # a private report without clientOrgId
    [report_id] = store.add([tuple(row)])
    assert make_sender().drain(10)
    stored = store.get(report_id)
    assert (stored["result"], stored["message"]) == ("DISCARDED", "missing fields: clientOrgId")


def test_413_batches_are_split_and_resent(store, pcm, make_sender, registry):
    rows = fill(store, 12_000)
    # a sender told it may send 12,000 at once meets the PCM's real 5,000 limit
    assert make_sender(max_reports=12_000).drain(30)
    sizes = [(r[1], r[2]) for r in pcm.requests if r[0] == "private"]
    # 12,000 refused; its first half (6,000) refused, sent as 3,000 + 3,000; then the second half alike
    assert sizes == [(413, 0), (413, 0), (200, 3000), (200, 3000), (413, 0), (200, 3000), (200, 3000)]
    assert pcm.received == Counter({interaction_of(r): 1 for r in rows})
    assert registry.get_sample_value("ofsre_pcm_batches_total", {"kind": "private", "outcome": "split"}) == 3


def test_429_and_500_are_retried_no_earlier_than_retry_after(store, pcm, make_sender, registry):
    rows = fill(store, 10)
    pcm.script(Reply(429, {"Retry-After": "1"}), Reply(500), Reply(503))
    arrivals = []
    original = pcm._report

    def spy(kind, headers, body):
        arrivals.append(time.monotonic())
        return original(kind, headers, body)

    pcm._report = spy
    assert make_sender().drain(20)
    assert len(arrivals) == 4
    assert arrivals[1] - arrivals[0] >= 1.0       # Retry-After: 1 was honoured
    assert pcm.received == Counter({interaction_of(r): 1 for r in rows})
    assert registry.get_sample_value("ofsre_pcm_batches_total",
                                     {"kind": "private", "outcome": "throttled"}) == 1
    assert registry.get_sample_value("ofsre_pcm_batches_total",
                                     {"kind": "private", "outcome": "server_error"}) == 2


def test_401_refreshes_the_token_once_and_retries(store, pcm, make_sender, registry):
    rows = fill(store, 5)
    sender = make_sender()
    sender.tokens.get()
    pcm.revoke_tokens()            # the cached token is no longer valid at the PCM
    assert sender.drain(10)
    assert pcm.token_requests == 2
    assert [r[1] for r in pcm.requests if r[0] == "private"] == [401, 200]
    assert pcm.received == Counter({interaction_of(r): 1 for r in rows})
    assert registry.get_sample_value("ofsre_pcm_batches_total",
                                     {"kind": "private", "outcome": "unauthorized"}) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 406, 415])
def test_a_refused_batch_is_held_counted_and_can_be_requeued(store, pcm, make_sender, registry, status):
    rows = fill(store, 6)
    # 401 must survive the one refresh to be a refusal: script it twice
    pcm.script(*[Reply(status)] * (2 if status == 401 else 1))
    sender = make_sender()
    assert sender.drain(10)        # nothing left pending: the batch is held, not retried forever
    assert store.counts_by_state()["held"] == 6
    assert store.get(id_of(store, rows[0]))["error"].startswith(f"HTTP {status}")
    assert registry.get_sample_value("ofsre_pcm_reports_held_total",
                                     {"kind": "private", "status": str(status)}) == 6
    assert not pcm.received
    assert store.requeue_held() == 6
    assert sender.drain(10)
    assert pcm.received == Counter({interaction_of(r): 1 for r in rows})


def test_nothing_is_sent_without_a_token(store, pcm, make_sender, registry):
    fill(store, 20)
    pcm.token_script.extend([500, 503, 401])
    assert make_sender().drain(10)
    assert pcm.unauthenticated == 0                      # no report request ever went without a token
    tokens = [r for r in pcm.requests if r[0] == "token"]
    reports = [r for r in pcm.requests if r[0] == "private"]
    assert [r[1] for r in tokens] == [500, 503, 401, 200]
    assert pcm.requests.index(tokens[-1]) < pcm.requests.index(reports[0])
    assert registry.get_sample_value("ofsre_pcm_batches_total",
                                     {"kind": "private", "outcome": "token_error"}) == 3


def test_without_a_token_the_reports_stay_pending(store, pcm, make_sender):
    fill(store, 20)
    pcm.token_script.extend([500] * 1000)
    assert not make_sender().drain(0.5)
    assert pcm.unauthenticated == 0 and not pcm.received
    assert store.counts_by_state()["pending"] == 20


def test_the_token_is_refreshed_before_it_expires(store, pcm, make_sender):
    pcm.token_lifetime = 1    # refreshed at 80 % of its lifetime
    fill(store, 3)
    sender = make_sender()
    first = sender.tokens.get()
    assert sender.tokens.get() == first
    time.sleep(0.85)
    assert sender.tokens.get() != first
    assert sender.drain(5)
    assert pcm.unauthenticated == 0


def test_one_sender_per_store(store, pcm, make_sender):
    first = make_sender()
    assert first.acquire(wait=False)
    second = make_sender()
    assert not second.acquire(wait=False)
    first.close()
    assert second.acquire(wait=False)


def test_none_lost_across_a_sender_killed_with_sigkill_and_restarted(store, pcm, tmp_path):
    rows = fill(store, 20_000)
    pcm.delay = 0.05                 # slow enough to kill it mid-way
    env = {**os.environ, "OFSRE_PCM_URL": pcm.url, "OFSRE_PCM_CLIENT_ID": "ofsre",
           "OFSRE_PCM_CLIENT_SECRET": "secret", "OFSRE_PCM_MAX_REPORTS": "500", "OFSRE_PCM_POLL_S": "0.05"}
    command = [sys.executable, "-m", "ofsre", "pcm", "send", "--store", str(store.path)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sum(pcm.received.values()) < 4000:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    delivered_before = store.counts_by_state()["delivered"]
    assert 0 < delivered_before < 20_000
    pcm.delay = 0.0
    second = subprocess.run(command + ["--once", "--timeout", "60"], env=env, capture_output=True, text=True,
                            timeout=90)
    assert second.returncode == 0, second.stderr
    assert store.counts_by_state() == {"pending": 0, "delivered": 20_000, "held": 0}
    assert set(pcm.received) == {interaction_of(r) for r in rows}          # none lost
    duplicates = sum(n - 1 for n in pcm.received.values())
    assert duplicates <= 500     # at most the one batch in flight at the kill reached the PCM twice


def test_sender_options_need_a_url_and_a_client(monkeypatch):
    from ofsre.exporters.pcm.sender import SenderOptions

    for name in ("OFSRE_PCM_URL", "OFSRE_PCM_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="OFSRE_PCM_URL"):
        SenderOptions.from_env()
    monkeypatch.setenv("OFSRE_PCM_URL", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="OFSRE_PCM_CLIENT_ID"):
        SenderOptions.from_env()
    monkeypatch.setenv("OFSRE_PCM_CLIENT_ID", "me")
    assert SenderOptions.from_env().token_url == "http://127.0.0.1:9/token/"


def test_a_sender_stopped_mid_retry_leaves_its_batch_pending(store, pcm, registry):
    fill(store, 10)
    pcm.script(*[Reply(500)] * 1000)
    sender = Sender(store, sender_options(pcm, backoff_initial=0.05), registry=registry)
    try:
        assert not sender.drain(0.3)
    finally:
        sender.close()
    assert store.counts_by_state()["pending"] == 10


def test_the_long_running_sender_serves_the_deadline_metrics_and_stops_on_sigterm(store, pcm):
    import socket

    import httpx

    rows = fill(store, 30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OFSRE_PCM_URL": pcm.url, "OFSRE_PCM_CLIENT_ID": "ofsre",
           "OFSRE_PCM_CLIENT_SECRET": "secret", "OFSRE_PCM_POLL_S": "0.05"}
    sender = subprocess.Popen([sys.executable, "-m", "ofsre", "pcm", "send", "--store", str(store.path),
                               "--metrics-port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(pcm.received) < len(rows):
            assert time.monotonic() < deadline and sender.poll() is None
            time.sleep(0.05)
        store.add([report_row()])              # one more arrives while it runs: delivered too
        while len(pcm.received) < len(rows) + 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The PCM has every report; the sender marks the last one delivered just after its answer,
        # so the backlog reads 0 from then on (polled, within the deadline).
        while 'ofsre_pcm_backlog_reports{kind="private"} 0.0' not in (
                metrics := httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'ofsre_pcm_day_reports{status="ACCEPTED"}' in metrics
        assert "ofsre_pcm_deadline_seconds_left" in metrics
    finally:
        sender.send_signal(signal.SIGTERM)
        assert sender.wait(15) == 0            # a clean stop: nothing in flight is lost (it stays pending)


def test_ofsre_pcm_results_and_requeue(store, pcm, capsys):
    from ofsre.cli import main

    rows = fill(store, 3)
    pcm.script(Reply(403))
    sender = Sender(store, sender_options(pcm))
    try:
        assert sender.drain(10)
    finally:
        sender.close()
    assert main(["pcm", "results", "--store", str(store.path), "--status", "HELD"]) == 0
    out = capsys.readouterr().out
    assert out.count("HELD") == 3 and "HTTP 403" in out
    assert main(["pcm", "requeue", "--store", str(store.path)]) == 0
    assert "3 held reports queued again" in capsys.readouterr().out
    assert store.counts_by_state()["pending"] == len(rows)


def test_a_drain_that_timed_out_can_drain_again(store, pcm, make_sender):
    rows = fill(store, 5)
    pcm.script(*[Reply(503)] * 30)
    sender = make_sender(backoff_initial=0.02, backoff_max=0.02)
    assert not sender.drain(0.2)
    pcm.replies.clear()
    assert sender.drain(10)
    assert set(pcm.received) == {interaction_of(r) for r in rows}


def test_a_drain_in_the_callers_thread_leaves_its_logs_shipped(store, pcm, make_sender):
    """drain() runs in the caller's thread: a shipper's meanwhile (no self-logging loop), and the
    caller's own again afterwards, so its later log records still reach the log shippers."""
    from ofsre.exporters._transport import in_shipper_thread

    fill(store, 3)
    assert make_sender().drain(10)
    assert not in_shipper_thread()
