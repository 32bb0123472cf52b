"""The database backend: real SQLite files, the real PostgreSQL, real worker processes."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from queue_support import FAST, PG_URL, take
from sqlalchemy import insert

from ofsre.platform.queue import QueueConfig, create_schema, open_queue
from ofsre.platform.queue.db import make_engine, messages

CONSUMER = Path(__file__).with_name("queue_consumer.py")


@pytest.fixture
async def sqlite_url(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/queue.db"
    await create_schema(url)
    return url


async def _open(url: str, **kw):
    return await open_queue(QueueConfig(**{**FAST, "database_url": url, **kw}), registry=None)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_two_worker_processes_process_every_message_exactly_once(backend, tmp_path, topic):
    """Two real processes consume one queue: each message is acked by exactly one of them, none lost."""
    url = PG_URL if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    await create_schema(url)
    workers = [await asyncio.create_subprocess_exec(sys.executable, str(CONSUMER), url, topic,
                                                    stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    try:
        for worker in workers:
            async with asyncio.timeout(60):
                assert (await worker.stdout.readline()).strip() == b"ready"
        publisher = await _open(url)
        total = 200
        for n in range(total):
            await publisher.publish(topic, {"n": n})
        async with asyncio.timeout(120):
            while await publisher.depth(topic):  # rows leave the table only when acked
                await asyncio.sleep(0.1)
        await publisher.close()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
    outputs = []
    for worker in workers:
        async with asyncio.timeout(60):
            out, _ = await worker.communicate()
        assert worker.returncode == 0
        outputs.append([int(line) for line in out.split()])
    processed = outputs[0] + outputs[1]
    assert sorted(processed) == list(range(total))  # every message once: no loss, no double processing
    assert all(outputs), "both processes took part"


async def test_create_schema_is_idempotent_when_migrations_race():
    await asyncio.gather(*(create_schema(PG_URL) for _ in range(3)))
    engine = make_engine(PG_URL)
    try:
        await create_schema(engine)  # an engine works too, and is left open for its owner
        async with engine.connect():
            pass
    finally:
        await engine.dispose()


async def test_a_lost_lease_cannot_settle_the_message(sqlite_url, topic):
    slow = await _open(sqlite_url, lease_seconds=0.2)
    other = await _open(sqlite_url)
    try:
        await slow.publish(topic, {"n": 1})
        stale = await take(slow.subscribe(topic))
        fresh = await take(other.subscribe(topic))  # claimable again once the lease ran out
        assert (fresh.id, fresh.attempt) == (stale.id, 2)
        await stale.dead_letter("late")  # its lease is gone: nothing happens to the row
        assert await other.depth(topic) == 1 and await other.dead_letters(topic) == []
        await fresh.ack()
        assert await other.depth(topic) == 0
    finally:
        await slow.close(timeout=0)
        await other.close(timeout=0)


async def test_prefetched_messages_go_back_when_the_subscription_closes(sqlite_url, topic):
    queue = await _open(sqlite_url, batch_size=3)
    try:
        ids = [await queue.publish(topic, {"n": n}) for n in range(3)]
        async with queue.subscribe(topic) as messages_:
            first = await take(messages_)  # the other two were claimed with it
        assert first.id == ids[0]
        assert await queue.depth(topic) == 3
        async with queue.subscribe(topic) as messages_:
            rest = [await take(messages_), await take(messages_)]
        assert [(m.id, m.attempt) for m in rest] == [(ids[1], 1), (ids[2], 1)]  # the attempt was given back
    finally:
        await queue.close(timeout=0)


async def test_an_unreadable_message_is_dead_lettered_without_reaching_the_consumer(sqlite_url, topic):
    queue = await _open(sqlite_url)
    try:
        async with queue.engine.begin() as conn:
            await conn.execute(insert(messages).values(topic=topic, body="not json", headers="{}", attempts=0,
                                                       available_at=0, created_at=0))
        await queue.publish(topic, {"n": 1})
        async with queue.subscribe(topic) as messages_:
            msg = await take(messages_)
            assert msg.body == {"n": 1}
            await msg.ack()
        [dead] = await queue.dead_letters(topic)
        assert (dead.body, dead.reason) == ("not json", "body is not JSON")
    finally:
        await queue.close()


async def test_an_idle_consumer_backs_off_and_resets_after_a_message(sqlite_url, topic):
    queue = await _open(sqlite_url, poll_min_seconds=0.01, poll_max_seconds=0.1)
    waits: list[float | None] = []

    async def no_sleep(awaitable, timeout=None):  # records each wait instead of sleeping
        awaitable.close()
        waits.append(timeout)
        if len(waits) == 6:
            await queue.publish(topic, {"n": 1})

    queue._until_closed = no_sleep
    try:
        subscription = queue.subscribe(topic)
        msg = await take(subscription)
        await msg.ack()
        while len(waits) < 7:
            await subscription._fill()
        assert waits == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1, 0.01]
    finally:
        await queue.close()


async def test_a_publish_wakes_a_waiting_consumer_of_the_same_queue(sqlite_url, topic):
    queue = await _open(sqlite_url, poll_min_seconds=600, poll_max_seconds=600)
    try:
        subscription = queue.subscribe(topic)
        consumer = asyncio.create_task(anext(subscription))
        while topic not in queue._wake:  # the consumer has begun its first fetch
            await asyncio.sleep(0.005)
        await queue.publish(topic, {"n": 1})
        async with asyncio.timeout(60):  # far below the 600 s backoff it would otherwise sleep
            msg = await consumer
        assert msg.body == {"n": 1}
    finally:
        await queue.close(timeout=0)


async def test_depth_counts_waiting_and_leased_messages(sqlite_url, topic):
    queue = await _open(sqlite_url)
    try:
        await queue.publish(topic, {"n": 1})
        await queue.publish(topic, {"n": 2})
        msg = await take(queue.subscribe(topic))
        assert await queue.depth(topic) == 2
        await msg.ack()
        assert await queue.depth(topic) == 1
    finally:
        await queue.close(timeout=0)


async def test_ping_is_false_when_the_database_is_unreachable():
    queue = await _open("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        assert await queue.ping() is False
    finally:
        await queue.close()


async def test_ping_is_false_before_the_schema_exists(tmp_path):
    queue = await _open(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    try:
        assert await queue.ping() is False
        await create_schema(queue.engine)
        assert await queue.ping() is True
    finally:
        await queue.close()
