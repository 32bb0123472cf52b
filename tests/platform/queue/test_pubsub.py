"""The Pub/Sub adapter through the in-memory stand-in for google-cloud-pubsub (no emulator here; see
queue_fakes)."""

from __future__ import annotations

import time

import pytest
from queue_fakes import FakePubSub
from queue_support import FAST, take

from ofsre.platform.queue import QueueConfig, UnsupportedOperation, open_queue

PROJECT = "ofsre-test"


@pytest.fixture
def hub():
    return FakePubSub()


@pytest.fixture
async def make(hub):
    opened = []

    async def make(**kw):
        config = QueueConfig(**{**FAST, "backend": "pubsub", "pubsub_project": PROJECT, **kw})
        queue = await open_queue(config, pubsub=hub.module(), registry=None)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close(timeout=0)


@pytest.mark.parametrize(("max_attempts", "lease", "deliveries", "deadline"),
                         [(3, 1, 5, 10), (10, 60, 11, 60)])
async def test_subscriptions_carry_a_dead_letter_policy_within_pubsubs_bounds(
        make, hub, topic, max_attempts, lease, deliveries, deadline):
    queue = await make(max_attempts=max_attempts, lease_seconds=lease)
    await queue.publish(topic, {"n": 1})  # declares the topic, its DLQ and the default group's subscription
    subscription = hub.subscriptions[f"projects/{PROJECT}/subscriptions/{topic}-worker"]
    assert subscription["dlq"] == f"projects/{PROJECT}/topics/{topic}-dlq"
    assert (subscription["max_attempts"], subscription["deadline"]) == (deliveries, deadline)
    assert f"projects/{PROJECT}/subscriptions/{topic}-dlq" in hub.subscriptions  # keeps the dead letters


async def test_each_group_is_its_own_subscription(make, topic):
    queue = await make()
    audit = queue.subscribe(topic, group="audit")
    await take_nothing_yet(audit)
    await queue.publish(topic, {"n": 1})
    worker_msg = await take(queue.subscribe(topic))
    audit_msg = await take(audit)
    assert worker_msg.id == audit_msg.id  # both groups get the message
    await worker_msg.ack()
    await audit_msg.ack()


async def take_nothing_yet(subscription) -> None:
    """Create the group's subscription (first fetch) before anything is published."""
    await subscription._fill()


async def test_a_lease_shorter_than_the_subscription_deadline_is_applied_per_message(make, hub, topic):
    first = await make(lease_seconds=1)
    sent = await first.publish(topic, {"n": 1})
    await take(first.subscribe(topic))
    [entry] = hub.subscriptions[f"projects/{PROJECT}/subscriptions/{topic}-worker"]["messages"].values()
    assert entry["leased_until"] - time.monotonic() <= 1  # not the subscription's 10 s
    await first.close(timeout=0)
    again = await take((await make(lease_seconds=1)).subscribe(topic))
    assert (again.id, again.attempt) == (sent, 2)


async def test_depth_is_not_offered(make, topic):
    queue = await make()
    with pytest.raises(UnsupportedOperation, match="num_undelivered_messages"):
        await queue.depth(topic)


async def test_ping_follows_the_service(make, hub):
    queue = await make()
    assert await queue.ping() is True
    hub.available = False
    assert await queue.ping() is False


async def test_a_project_is_required():
    with pytest.raises(ValueError, match="PUBSUB_PROJECT"):
        await open_queue(QueueConfig(backend="pubsub"), pubsub=FakePubSub().module(), registry=None)
