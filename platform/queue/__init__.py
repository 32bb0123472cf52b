"""One small queue interface over a database, SQS/SNS, Kafka and Google Pub/Sub.

::

    from ofsre.platform.queue import open_queue

    queue = await open_queue(settings)          # backend from OFSRE_QUEUE_BACKEND (db by default)
    await queue.publish("pix-payments", {"payment_id": "p-1"}, key="p-1")

    async with queue.subscribe("pix-payments", group="worker") as messages:
        async for msg in messages:              # msg.body, msg.headers, msg.attempt, msg.id
            try:
                await settle(msg.body)
            except TemporaryFailure:
                await msg.nack()                # redelivered with attempt + 1 …
            except BadPayment as exc:
                await msg.dead_letter(str(exc)) # … or given up on now
            else:
                await msg.ack()

    await queue.ping()                          # readiness
    await queue.depth("pix-payments")           # waiting + in flight (KEDA-style scaling)
    await queue.dead_letters("pix-payments")    # what was given up on, and why
    await queue.close()                         # subscriptions end, connections close

Delivery is at least once: a consumer that dies without settling loses its lease
(``OFSRE_QUEUE_LEASE_SECONDS``) and the message is delivered again with ``attempt`` + 1.
After ``OFSRE_QUEUE_MAX_ATTEMPTS`` (5) deliveries it is dead-lettered automatically.
Every message carries the publisher's trace context and ``x-fapi-interaction-id``;
the consumer's loop body runs under a CONSUMER span of the same trace
(:mod:`ofsre.instrumentation.messaging`). Backend libraries are imported only when their
backend is opened. The database tables come from :func:`create_schema`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from ._config import BACKENDS, QueueConfig
from ._core import DeadLetter, Message, Queue, QueueError, Subscription, UnsupportedOperation

__all__ = ["open_queue", "create_schema", "Queue", "Message", "Subscription", "DeadLetter", "QueueConfig",
           "QueueError", "UnsupportedOperation", "BACKENDS"]


async def open_queue(settings: Any = None, *, service: str | None = None,
                     registry: CollectorRegistry | None = REGISTRY, tracer_provider: Any = None,
                     **options: Any) -> Queue:
    """Open the queue configured by ``settings`` (any object with attributes, a
    :class:`QueueConfig`, or None) and the ``OFSRE_QUEUE_*`` environment.

    ``service`` names the ``service`` label of the queue metrics (default: ``OFSRE_SERVICE``).
    ``options`` are passed to the backend's class: ``engine=`` (db: share an AsyncEngine),
    ``kafka=`` / ``pubsub=`` (a stand-in for the client module, as the tests use).
    """
    overrides: dict[str, Any] = {"service": service} if service else {}
    config = QueueConfig.resolve(settings, **overrides)
    kwargs = {"registry": registry, "tracer_provider": tracer_provider, **options}
    if config.backend == "db":
        from .db import DatabaseQueue
        return DatabaseQueue(config, **kwargs)
    if config.backend == "sqs":
        from .sqs import SqsQueue
        return await SqsQueue.open(config, **kwargs)
    if config.backend == "kafka":
        from .kafka import KafkaQueue
        return await KafkaQueue.open(config, **kwargs)
    from .pubsub import PubSubQueue
    return await PubSubQueue.open(config, **kwargs)


async def create_schema(url_or_engine: Any) -> None:
    """Create the db backend's tables (idempotent). Takes a SQLAlchemy async URL or AsyncEngine."""
    from .db import create_schema as _create

    await _create(url_or_engine)
