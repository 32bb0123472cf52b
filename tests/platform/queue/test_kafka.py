"""The Kafka adapter through the in-memory stand-in for aiokafka (no broker runs here; see queue_fakes)."""

from __future__ import annotations

import zlib

import aiokafka
import pytest
from queue_fakes import FakeKafkaBroker
from queue_support import FAST, take

from ofsre.platform.queue import QueueConfig, open_queue
from ofsre.platform.queue.kafka import OffsetTracker


@pytest.fixture
def broker():
    return FakeKafkaBroker(partitions=2)


@pytest.fixture
async def make(broker):
    opened = []

    async def make(**kw):
        queue = await open_queue(QueueConfig(**{**FAST, "backend": "kafka", **kw}), kafka=broker.module(),
                                 registry=None)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close(timeout=0)


def _key_on_partition(partition: int) -> str:
    return next(k for k in (f"k{n}" for n in range(100)) if zlib.crc32(k.encode()) % 2 == partition)


def test_offsets_are_committed_only_past_settled_messages():
    tracker, tp = OffsetTracker(), aiokafka.TopicPartition("t", 0)
    for offset in (0, 1, 2, 3):
        tracker.track(tp, offset)
    assert tracker.settle(tp, 1) is None  # 0 is still in flight
    assert tracker.settle(tp, 3) is None
    assert tracker.settle(tp, 0) == 2
    assert tracker.settle(tp, 2) == 4


async def test_acking_out_of_order_never_commits_past_an_unsettled_message(make, broker, topic):
    queue = await make(batch_size=2)
    key = _key_on_partition(0)
    await queue.publish(topic, {"n": 0}, key=key)
    await queue.publish(topic, {"n": 1}, key=key)
    group, tp = f"{topic}.worker", aiokafka.TopicPartition(topic, 0)
    async with queue.subscribe(topic) as messages:
        first, second = await take(messages), await take(messages)
        await second.ack()
        assert broker.committed.get((group, tp)) is None
        await first.ack()
        assert broker.committed[(group, tp)] == 2


async def test_nack_republishes_with_the_next_attempt_and_same_key(make, broker, topic):
    queue = await make()
    await queue.publish(topic, {"n": 1}, key="p-1")
    async with queue.subscribe(topic) as messages:
        await (await take(messages)).nack()
        again = await take(messages)
        await again.ack()
    partition = zlib.crc32(b"p-1") % 2
    original, retry = broker.logs[topic][partition]
    assert retry.key == original.key == b"p-1" and retry.value == original.value
    assert dict(retry.headers)["ofsre-attempt"] == b"1" and again.attempt == 2
    assert await queue.depth(topic) == 0


async def test_dead_letters_go_to_the_dlq_topic_with_the_reason(make, broker, topic):
    queue = await make()
    await queue.publish(topic, {"n": 1})
    async with queue.subscribe(topic) as messages:
        await (await take(messages)).dead_letter("unknown account")
    [record] = [r for part in broker.logs[f"{topic}.dlq"] for r in part]
    assert dict(record.headers)["ofsre-dead-letter-reason"] == b"unknown account"
    assert await queue.depth(topic) == 0


async def test_a_rebalance_hands_an_unsettled_message_to_the_new_owner(make, topic):
    first, second = await make(), await make()
    sent = await first.publish(topic, {"n": 1}, key=_key_on_partition(1))
    msg = await take(first.subscribe(topic))
    # A second member joins: partition 1 moves to it, and it reads from the group's last commit.
    again = await take(second.subscribe(topic))
    assert again.id == msg.id == sent
    await msg.ack()  # the old owner's commit fails quietly: the partition is no longer its own
    await again.ack()
    assert await second.depth(topic) == 0


async def test_depth_is_the_groups_lag(make, topic):
    queue = await make()
    for n in range(3):
        await queue.publish(topic, {"n": n})
    assert await queue.depth(topic) == 3
    assert await queue.depth(topic, group="audit") == 3  # another group has its own lag
    async with queue.subscribe(topic) as messages:
        await (await take(messages)).ack()
    assert await queue.depth(topic) == 2
    assert await queue.depth(topic, group="audit") == 3


async def test_ping_follows_the_broker(make, broker):
    queue = await make()
    assert await queue.ping() is True
    broker.available = False
    assert await queue.ping() is False


async def test_an_unreachable_broker_is_retried_with_backoff_not_in_a_busy_loop(make, broker, topic):
    queue = await make(poll_min_seconds=0.01, poll_max_seconds=0.04)
    await queue.publish(topic, {"n": 1})
    broker.available = False
    waits: list[float | None] = []
    until_closed = queue._until_closed

    async def recorded(awaitable, timeout=None):
        if timeout is None:  # the fetch itself
            return await until_closed(awaitable)
        awaitable.close()
        waits.append(timeout)
        broker.available = len(waits) >= 4  # the broker comes back after four failed fetches

    queue._until_closed = recorded
    async with queue.subscribe(topic) as messages:
        msg = await take(messages)
        await msg.ack()
    assert waits == [0.01, 0.02, 0.04, 0.04]
