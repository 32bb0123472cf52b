"""The behaviour every backend promises, run against each one (see conftest.py for what is real).

db-sqlite, db-postgresql and sqs (moto server, real HTTP) are real; kafka and pubsub run
through client-boundary fakes because no broker or emulator can run on this machine.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import SpanKind
from queue_support import take

from ofsre.instrumentation import semconv
from ofsre.instrumentation.context import current_log_context, use_interaction_id
from ofsre.platform.queue import QueueError

INTERACTION_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def sample(registry, spec, queue, topic, suffix="", **extra):
    labels = {"service": queue.config.service, "queue": topic, "backend": queue.backend, **extra}
    return registry.get_sample_value(spec.series + suffix, labels) or 0.0


async def test_roundtrip_ack_removes_and_settling_twice_is_a_no_op(harness, topic, registry):
    queue = await harness.open()
    assert await queue.ping()
    body = {"payment_id": "p-1", "amount": "10.00", "nested": {"ok": True}}
    message_id = await queue.publish(topic, body, key="p-1")
    async with queue.subscribe(topic) as messages:
        msg = await take(messages)
        assert (msg.body, msg.id, msg.attempt, msg.topic) == (body, message_id, 1, topic)
        assert await harness.pending(queue, topic) == 1
        await msg.ack()
        await msg.nack()  # already settled: ignored
    assert msg.settled
    assert await harness.pending(queue, topic) == 0
    assert sample(registry, semconv.QUEUE_FAILED, queue, topic, outcome="nack") == 0


async def test_every_message_is_delivered_once(harness, topic):
    queue = await harness.open()
    sent = {await queue.publish(topic, {"n": n}) for n in range(6)}
    got = []
    async with queue.subscribe(topic) as messages:
        while len(got) < 6:
            msg = await take(messages)
            got.append(msg.id)
            await msg.ack()
    assert sorted(got) == sorted(sent)
    assert await harness.pending(queue, topic) == 0


async def test_nack_redelivers_with_the_next_attempt(harness, topic, registry):
    queue = await harness.open()
    message_id = await queue.publish(topic, {"payment_id": "p-2"})
    async with queue.subscribe(topic) as messages:
        first = await take(messages)
        await first.nack()
        again = await take(messages)
        assert (again.id, again.body, again.attempt) == (message_id, {"payment_id": "p-2"}, 2)
        await again.ack()
    assert await harness.pending(queue, topic) == 0
    assert sample(registry, semconv.QUEUE_FAILED, queue, topic, outcome="nack") == 1
    assert sample(registry, semconv.QUEUE_CONSUMED, queue, topic) == 1


async def test_max_attempts_moves_the_message_to_the_dead_letters(harness, topic, registry):
    queue = await harness.open(max_attempts=3)
    message_id = await queue.publish(topic, {"payment_id": "p-3"})
    attempts = []
    async with queue.subscribe(topic) as messages:
        while len(attempts) < 3:
            msg = await take(messages)
            attempts.append(msg.attempt)
            await msg.nack()
    assert attempts == [1, 2, 3]
    assert await harness.pending(queue, topic) == 0
    [dead] = await queue.dead_letters(topic)
    assert (dead.id, dead.body, dead.attempt, dead.reason) == (message_id, {"payment_id": "p-3"}, 3,
                                                              "max attempts (3) reached")
    assert sample(registry, semconv.QUEUE_FAILED, queue, topic, outcome="nack") == 2
    assert sample(registry, semconv.QUEUE_FAILED, queue, topic, outcome="dead_letter") == 1
    assert sample(registry, semconv.QUEUE_CONSUMED, queue, topic) == 0


async def test_explicit_dead_letter_and_reject(harness, topic):
    queue = await harness.open()
    await queue.publish(topic, {"n": 1})
    await queue.publish(topic, {"n": 2})
    async with queue.subscribe(topic) as messages:
        for _ in range(2):
            msg = await take(messages)
            if msg.body["n"] == 1:
                await msg.dead_letter("invalid account")
            else:
                await msg.nack(requeue=False)
    dead = await queue.dead_letters(topic)
    assert {(d.body["n"], d.reason, d.attempt) for d in dead} == {(1, "invalid account", 1),
                                                                  (2, "rejected", 1)}
    assert await harness.pending(queue, topic) == 0


async def test_a_crashed_consumers_message_is_delivered_again(harness, topic):
    crashed = await harness.open(lease_seconds=1)
    message_id = await crashed.publish(topic, {"payment_id": "p-4"})
    msg = await take(crashed.subscribe(topic))
    assert msg.attempt == 1
    await crashed.close(timeout=0)  # gone without settling: the lease runs out (Kafka: the group rebalances)

    survivor = await harness.open(lease_seconds=1)
    async with survivor.subscribe(topic) as messages:
        again = await take(messages)
        assert (again.id, again.body) == (message_id, {"payment_id": "p-4"})
        assert again.attempt == (2 if harness.counts_redelivery else 1)
        await again.ack()
    assert await harness.pending(survivor, topic) == 0


async def test_trace_context_interaction_id_and_metrics_cross_the_queue(harness, topic, tracing, registry):
    provider, exporter = tracing
    queue = await harness.open()
    with provider.get_tracer("test").start_as_current_span("POST /pix/payments") as request_span, \
            use_interaction_id(INTERACTION_ID):
        await queue.publish(topic, {"payment_id": "p-5"})
    trace_id = request_span.get_span_context().trace_id

    seen = {}
    async with queue.subscribe(topic) as messages:
        async for msg in messages:
            seen = current_log_context()  # what the worker's log lines carry
            await msg.ack()
            break

    spans = exporter.get_finished_spans()
    [producer] = [s for s in spans if s.kind == SpanKind.PRODUCER]
    [consumer] = [s for s in spans if s.kind == SpanKind.CONSUMER]
    assert producer.context.trace_id == consumer.context.trace_id == trace_id
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes["messaging.system"] == queue.backend
    assert seen["trace_id"] == format(trace_id, "032x")
    assert seen["interaction_id"] == INTERACTION_ID
    assert sample(registry, semconv.QUEUE_PUBLISHED, queue, topic) == 1
    assert sample(registry, semconv.QUEUE_CONSUMED, queue, topic) == 1
    assert sample(registry, semconv.QUEUE_PROCESSING_DURATION, queue, topic, "_count") == 1
    assert sample(registry, semconv.QUEUE_LATENCY, queue, topic, "_count") == 1
    for component in ("messaging", "queue"):
        assert not registry.get_sample_value(semconv.TELEMETRY_ERRORS.series, {"component": component})



async def test_a_failing_propagator_is_counted_in_the_queues_registry(harness, topic, registry, monkeypatch):
    from opentelemetry import propagate
    from prometheus_client import REGISTRY

    def broken(*args, **kwargs):
        raise RuntimeError("propagator down")

    queue = await harness.open()
    monkeypatch.setattr(propagate, "inject", broken)
    errors = {"component": "messaging"}
    global_before = REGISTRY.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) or 0
    await queue.publish(topic, {"payment_id": "p-6"})  # published all the same, without trace headers
    async with queue.subscribe(topic) as messages:
        msg = await take(messages)
        assert msg.body == {"payment_id": "p-6"}
        await msg.ack()
    assert registry.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) == 1
    assert (REGISTRY.get_sample_value(semconv.TELEMETRY_ERRORS.series, errors) or 0) == global_before


async def test_close_ends_the_subscription_loop(harness, topic):
    queue = await harness.open()
    received = []

    async def worker():
        async for msg in queue.subscribe(topic):
            received.append(msg.body)
            await msg.ack()

    task = asyncio.create_task(worker())
    await queue.publish(topic, {"n": 1})
    async with asyncio.timeout(30):
        while not received:
            await asyncio.sleep(0.01)
    await queue.close()
    async with asyncio.timeout(30):
        await task  # returns: the loop ended by itself
    assert received == [{"n": 1}]
    assert await queue.ping() is False  # readiness turns red as soon as the queue closes
    with pytest.raises(QueueError):
        await queue.publish(topic, {"n": 2})
