"""The ``kafka`` backend (aiokafka).

* A Kafka topic per queue topic (``<prefix><topic>``) and ``<prefix><topic>.dlq`` for dead
  letters. Topics come from the broker's ``auto.create.topics.enable`` or from your
  infrastructure code: the adapter does not create them.
* ``subscribe(topic, group)`` joins the consumer group ``<prefix><topic>.<group>`` with
  auto-commit off and ``auto_offset_reset=earliest`` (messages published before the group
  first subscribed are not lost).
* ``ack`` commits. Offsets are committed only up to the oldest message still in flight on
  that partition, so settling out of order never skips an unsettled message.
* Kafka cannot un-read one record, so ``nack`` re-publishes it (same key, same headers,
  ``ofsre-attempt`` + 1) and commits the original; ``dead_letter`` publishes to ``.dlq``
  with the reason, then commits. A consumer that dies without committing hands its
  partitions to another member at the rebalance, which reads the message again — with the
  same ``attempt``: Kafka has no delivery counter, only ``nack`` increments it.
* Headers travel as record headers (trace context, interaction id, message id, attempt).
* ``depth`` is the consumer group's lag (end offset − committed offset, summed over partitions).

The client classes are taken from the ``kafka=`` argument (a namespace with the attributes
of :func:`client_module`), so tests run the adapter against an in-memory stand-in.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ._config import QueueConfig
from ._core import (
    ATTEMPT_HEADER,
    MESSAGE_ID_HEADER,
    REASON_HEADER,
    DeadLetter,
    Message,
    Queue,
    check_topic,
    decode_body,
)

__all__ = ["KafkaQueue", "client_module", "OffsetTracker"]

_log = logging.getLogger("ofsre.platform.queue")
_PING_TIMEOUT_S = 5.0
_DLQ_SUFFIX = ".dlq"


def client_module() -> SimpleNamespace:
    """The aiokafka names the adapter uses (the boundary a test stand-in reproduces)."""
    import aiokafka
    from aiokafka.errors import CommitFailedError

    return SimpleNamespace(AIOKafkaProducer=aiokafka.AIOKafkaProducer,
                           AIOKafkaConsumer=aiokafka.AIOKafkaConsumer,
                           TopicPartition=aiokafka.TopicPartition, CommitFailedError=CommitFailedError)


class OffsetTracker:
    """Which offset may be committed per partition, given messages settled in any order."""

    def __init__(self) -> None:
        self._pending: dict[Any, set[int]] = {}
        self._committed: dict[Any, int] = {}
        self._highest: dict[Any, int] = {}  # highest offset settled

    def track(self, partition: Any, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        # The first offset read is where the group's commit already stands: nothing to commit below it.
        self._committed.setdefault(partition, offset)

    def settle(self, partition: Any, offset: int) -> int | None:
        """The new commit offset for ``partition`` after settling ``offset``, or None if unchanged."""
        pending = self._pending.get(partition, set())
        pending.discard(offset)
        self._highest[partition] = max(offset, self._highest.get(partition, offset))
        target = min(pending) if pending else self._highest[partition] + 1
        if target <= self._committed.get(partition, offset):
            return None
        self._committed[partition] = target
        return target


@dataclass
class _Consumer:
    client: Any
    offsets: OffsetTracker = field(default_factory=OffsetTracker)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _headers(pairs: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: bytes(v).decode("utf-8", "replace") for k, v in (pairs or ()) if v is not None}


def _pairs(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


class KafkaQueue(Queue):
    backend = "kafka"
    long_polls = True

    def __init__(self, config: QueueConfig, *, kafka: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._kafka = kafka
        self._producer: Any = None
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, config: QueueConfig, *, kafka: Any = None, **kwargs: Any) -> KafkaQueue:
        queue = cls(config, kafka=kafka or client_module(), **kwargs)
        queue._producer = queue._kafka.AIOKafkaProducer(
            bootstrap_servers=config.kafka_bootstrap, client_id=f"ofsre-{config.service}",
            acks="all", enable_idempotence=True)
        await queue._producer.start()
        return queue

    def _name(self, topic: str) -> str:
        return f"{self.config.name_prefix}{topic}"

    def _common(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.config.kafka_bootstrap, "client_id": f"ofsre-{self.config.service}"}

    async def _consumer(self, topic: str, group: str) -> _Consumer:
        async with self._lock:
            found = self._consumers.get((topic, group))
            if found is None:
                client = self._kafka.AIOKafkaConsumer(
                    self._name(topic), group_id=f"{self._name(topic)}.{group}", enable_auto_commit=False,
                    auto_offset_reset="earliest", **self._common())
                try:
                    await client.start()
                except BaseException:
                    await client.stop()  # free what a half-started client holds; the next fetch retries
                    raise
                found = self._consumers[(topic, group)] = _Consumer(client)
            return found

    # -- the primitives --------------------------------------------------------------------
    async def _produce(self, name: str, payload: str | bytes, key: str | None,
                       headers: dict[str, str]) -> None:
        value = payload.encode() if isinstance(payload, str) else payload
        await self._producer.send_and_wait(name, value=value, key=key.encode() if key else None,
                                           headers=_pairs(headers))

    async def _send(self, topic: str, payload: str, key: str | None, headers: dict[str, str]) -> str:
        message_id = str(uuid.uuid4())
        await self._produce(self._name(topic), payload, key, {**headers, MESSAGE_ID_HEADER: message_id})
        return message_id

    async def _fetch(self, topic: str, group: str, max_messages: int, wait_seconds: float) -> list[Message]:
        consumer = await self._consumer(topic, group)
        async with consumer.lock:
            batches = await consumer.client.getmany(timeout_ms=int(wait_seconds * 1000),
                                                    max_records=max_messages)
        out = []
        for partition, records in batches.items():
            for record in records:
                consumer.offsets.track(partition, record.offset)
                headers = _headers(record.headers)
                message_id = (headers.get(MESSAGE_ID_HEADER)
                              or f"{partition.topic}-{partition.partition}-{record.offset}")
                out.append(Message(self, topic, group, id=message_id, raw_body=record.value or b"",
                                   headers=headers, attempt=int(headers.get(ATTEMPT_HEADER, "0")) + 1,
                                   receipt=(consumer, partition, record.offset, record.key)))
        return out

    async def _commit(self, message: Message) -> None:
        consumer, partition, offset, _ = message.receipt
        target = consumer.offsets.settle(partition, offset)
        if target is None:
            return
        try:
            await consumer.client.commit({partition: target})
        except self._kafka.CommitFailedError:
            # The group rebalanced: the partition's new owner reads from the last commit again.
            _log.warning("commit of %r failed after a rebalance; it will be delivered again", message)

    async def _ack(self, message: Message) -> None:
        await self._commit(message)

    async def _retry(self, message: Message, delay_seconds: float) -> None:
        # No per-record delay exists in Kafka: the copy is readable at once (see the README).
        key = message.receipt[3]
        headers = {**message.headers, ATTEMPT_HEADER: str(message.attempt)}
        await self._produce(self._name(message.topic), message.payload, key.decode() if key else None,
                            headers)
        await self._commit(message)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        key = message.receipt[3]
        headers = {**message.headers, ATTEMPT_HEADER: str(message.attempt), REASON_HEADER: reason}
        await self._produce(self._name(message.topic) + _DLQ_SUFFIX, message.payload,
                            key.decode() if key else None, headers)
        await self._commit(message)

    async def _release(self, messages: Sequence[Message]) -> None:
        # Never handed out: rewind to the first of them; they stay uncommitted until read again.
        first: dict[Any, tuple[Any, int]] = {}
        for message in messages:
            consumer, partition, offset, _ = message.receipt
            if partition not in first or offset < first[partition][1]:
                first[partition] = (consumer, offset)
        for partition, (consumer, offset) in first.items():
            consumer.client.seek(partition, offset)

    # -- inspection --------------------------------------------------------------------------
    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await self._producer.client.fetch_all_metadata()
            return True
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False

    async def _partitions(self, client: Any, name: str) -> list[Any]:
        await client.topics()  # loads the cluster metadata
        numbers = client.partitions_for_topic(name) or set()
        return [self._kafka.TopicPartition(name, number) for number in sorted(numbers)]

    async def depth(self, topic: str, group: str = "worker") -> int:
        """The group's lag: what KEDA's ``kafka`` scaler compares with ``lagThreshold``."""
        name = self._name(check_topic(topic))
        client = self._kafka.AIOKafkaConsumer(group_id=f"{name}.{group}", enable_auto_commit=False,
                                              **self._common())
        await client.start()
        try:
            partitions = await self._partitions(client, name)
            if not partitions:
                return 0
            ends = await client.end_offsets(partitions)
            lag = 0
            for partition in partitions:
                lag += ends[partition] - ((await client.committed(partition)) or 0)
            return lag
        finally:
            await client.stop()

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        """Read ``<topic>.dlq`` from the start without a group (nothing is committed)."""
        name = self._name(check_topic(topic)) + _DLQ_SUFFIX
        client = self._kafka.AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self._common())
        await client.start()
        try:
            partitions = await self._partitions(client, name)
            if not partitions:
                return []
            client.assign(partitions)
            ends = await client.end_offsets(partitions)
            await client.seek_to_beginning(*partitions)
            records: list[Any] = []
            while len(records) < limit and any([await client.position(p) < ends[p] for p in partitions]):
                batches = await client.getmany(timeout_ms=1000, max_records=limit - len(records))
                batch = [r for part in batches.values() for r in part]
                if not batch:
                    break  # end offsets can count records never delivered (transaction markers)
                records.extend(batch)
        finally:
            await client.stop()
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return [_dead_letter_of(topic, r) for r in records[:limit]]

    async def _close(self) -> None:
        for consumer in self._consumers.values():
            await consumer.client.stop()
        self._consumers.clear()
        if self._producer is not None:
            await self._producer.stop()


def _dead_letter_of(topic: str, record: Any) -> DeadLetter:
    headers = _headers(record.headers)
    body, _ = decode_body(record.value or b"")
    return DeadLetter(id=headers.get(MESSAGE_ID_HEADER, f"{record.topic}-{record.partition}-{record.offset}"),
                      topic=topic, body=body, headers=headers, attempt=int(headers.pop(ATTEMPT_HEADER, 0)),
                      reason=headers.pop(REASON_HEADER, ""))
