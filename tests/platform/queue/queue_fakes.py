"""In-memory stand-ins at the client boundary of the Kafka and Pub/Sub adapters.

No Kafka broker and no Pub/Sub emulator run on this machine (the emulator needs Java and
the gcloud SDK), so the contract tests drive the adapters through these fakes. They sit
exactly where the adapters call the client libraries, and stay honest in three ways:

* every constructor's and method's arguments are bound against the REAL library signature
  (``aiokafka.AIOKafkaConsumer.__init__``, ``SubscriberClient.pull``…), and Pub/Sub requests
  are parsed into the real protobuf request types, so a misspelt argument or field fails here;
* Pub/Sub answers are the real protobuf types (``PullResponse``, ``ReceivedMessage``…) and the
  errors the real ``google.api_core.exceptions``;
* the broker behaviour the adapters rely on is reproduced (listed per class below).

What they do NOT reproduce: networking, replication, retention, transactions, quotas,
Kafka heartbeats/session timeouts (a consumer leaves its group when stopped), Pub/Sub
ordering keys and push subscriptions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
import uuid
import zlib
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import aiokafka
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf.timestamp_pb2 import Timestamp
from google.pubsub_v1 import types as ptypes

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------

ConsumerRecord = namedtuple("ConsumerRecord", "topic partition offset timestamp key value headers")
RecordMetadata = namedtuple("RecordMetadata", "topic partition offset")


class CommitFailedError(Exception):
    """Raised, like aiokafka's, when committing a partition the consumer no longer owns."""


class KafkaConnectionError(Exception):
    pass


def _bind(real: Any, *args: Any, **kwargs: Any) -> None:
    """Fail like the real client would on an unknown or missing argument."""
    inspect.signature(real).bind(None, *args, **kwargs)


def _bound(fake: type, backend: Any) -> type:
    """``fake`` with its in-memory backend bound, so it is constructed exactly like the real class."""
    return type(fake.__name__, (fake,),
                {"__init__": lambda self, *a, **kw: fake.__init__(self, backend, *a, **kw)})


class FakeKafkaBroker:
    """Topics of N partitions, per-group committed offsets, group membership with rebalancing.

    Reproduced: records keyed to a partition by key (round robin without a key); topics
    auto-created on first use (``auto.create.topics.enable``); a group's partitions split
    among its started consumers and reassigned when one stops, the new owner starting from
    the group's committed offset (so a "crashed" consumer's uncommitted records are read
    again); commits of partitions no longer owned fail; ``getmany`` waits up to its timeout.
    ``available = False`` makes every call fail as with the broker down.
    """

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = partitions
        self.logs: dict[str, list[list[ConsumerRecord]]] = {}
        self.committed: dict[tuple[str, aiokafka.TopicPartition], int] = {}
        self.members: dict[tuple[str, str], list[FakeKafkaConsumer]] = {}
        self.available = True
        self._next = 0
        self._condition: asyncio.Condition | None = None

    def module(self) -> SimpleNamespace:
        """What ``KafkaQueue.open(kafka=...)`` takes in place of ``kafka.client_module()``."""
        return SimpleNamespace(AIOKafkaProducer=_bound(FakeKafkaProducer, self),
                               AIOKafkaConsumer=_bound(FakeKafkaConsumer, self),
                               TopicPartition=aiokafka.TopicPartition, CommitFailedError=CommitFailedError)

    def check(self) -> None:
        if not self.available:
            raise KafkaConnectionError("broker unavailable")

    @property
    def condition(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    def log(self, topic: str) -> list[list[ConsumerRecord]]:
        return self.logs.setdefault(topic, [[] for _ in range(self.partitions)])

    async def append(self, topic: str, value: bytes, key: bytes | None, headers: list) -> RecordMetadata:
        self.check()
        parts = self.log(topic)
        if key is not None:
            partition = zlib.crc32(key) % self.partitions
        else:
            partition, self._next = self._next % self.partitions, self._next + 1
        record = ConsumerRecord(topic, partition, len(parts[partition]), int(time.time() * 1000), key, value,
                                list(headers or []))
        parts[partition].append(record)
        async with self.condition:
            self.condition.notify_all()
        return RecordMetadata(topic, partition, record.offset)

    def rebalance(self, group: str, topic: str) -> None:
        members = self.members.get((group, topic), [])
        for index, consumer in enumerate(members):
            owned = {aiokafka.TopicPartition(topic, p)
                     for p in range(self.partitions) if p % len(members) == index}
            # Eager rebalancing, as aiokafka's: every member restarts from the group's commits.
            consumer.positions = {tp: self.committed.get((group, tp), 0) for tp in owned}

    def records_in(self) -> int:
        return sum(len(p) for parts in self.logs.values() for p in parts)


class FakeKafkaProducer:
    def __init__(self, broker: FakeKafkaBroker, **kwargs: Any) -> None:
        _bind(aiokafka.AIOKafkaProducer.__init__, **kwargs)
        self.broker, self.started = broker, False
        self.client = SimpleNamespace(fetch_all_metadata=self._metadata)

    async def _metadata(self) -> set[str]:
        self.broker.check()
        return set(self.broker.logs)

    async def start(self) -> None:
        self.broker.check()
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            partition: int | None = None, timestamp_ms: int | None = None,
                            headers: list | None = None) -> RecordMetadata:
        assert self.started, "send_and_wait() before start()"
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers or []), headers
        return await self.broker.append(topic, value, key, headers)


class FakeKafkaConsumer:
    def __init__(self, broker: FakeKafkaBroker, *topics: str, **kwargs: Any) -> None:
        _bind(aiokafka.AIOKafkaConsumer.__init__, *topics, **kwargs)
        # The adapter's group consumers must commit by hand and read from the start: the only mode modelled.
        assert not topics or (kwargs.get("enable_auto_commit") is False
                              and kwargs.get("auto_offset_reset") == "earliest"), kwargs
        self.broker, self.subscribed, self.group = broker, topics, kwargs.get("group_id")
        self.positions: dict[aiokafka.TopicPartition, int] = {}
        self.started = False

    async def start(self) -> None:
        self.broker.check()
        self.started = True
        for topic in self.subscribed:
            self.broker.log(topic)
            self.broker.members.setdefault((self.group, topic), []).append(self)
            self.broker.rebalance(self.group, topic)

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for topic in self.subscribed:
            self.broker.members[(self.group, topic)].remove(self)
            self.broker.rebalance(self.group, topic)
        self.positions = {}

    def _available(self, max_records: int | None) -> dict[aiokafka.TopicPartition, list[ConsumerRecord]]:
        out: dict[aiokafka.TopicPartition, list[ConsumerRecord]] = {}
        budget = max_records or 1 << 30
        for tp, position in sorted(self.positions.items()):
            records = self.broker.log(tp.topic)[tp.partition][position:position + budget]
            if records:
                out[tp] = records
                budget -= len(records)
                self.positions[tp] = position + len(records)
            if budget <= 0:
                break
        return out

    async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        assert self.started, "getmany() before start()"
        self.broker.check()
        deadline = time.monotonic() + timeout_ms / 1000
        async with self.broker.condition:
            while True:
                found = self._available(max_records)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                try:
                    await asyncio.wait_for(self.broker.condition.wait(), remaining)
                except TimeoutError:
                    return {}

    async def commit(self, offsets: dict | None = None) -> None:
        self.broker.check()
        for tp, offset in (offsets or {}).items():
            if tp not in self.positions:
                raise CommitFailedError(f"{tp} is not assigned to this consumer (rebalanced)")
            self.broker.committed[(self.group, tp)] = offset

    def seek(self, partition: aiokafka.TopicPartition, offset: int) -> None:
        assert partition in self.positions
        self.positions[partition] = offset

    async def committed(self, partition: aiokafka.TopicPartition) -> int | None:
        self.broker.check()
        return self.broker.committed.get((self.group, partition))

    async def topics(self) -> set[str]:
        self.broker.check()
        return set(self.broker.logs)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.broker.partitions)) if topic in self.broker.logs else None

    async def end_offsets(self, partitions: list) -> dict:
        return {tp: len(self.broker.log(tp.topic)[tp.partition]) for tp in partitions}

    def assign(self, partitions: list) -> None:
        assert self.group is None and not self.subscribed, "assign() is for group-less readers"
        self.positions = {tp: 0 for tp in partitions}

    async def seek_to_beginning(self, *partitions: Any) -> None:
        for tp in partitions or list(self.positions):
            self.positions[tp] = 0

    async def position(self, partition: aiokafka.TopicPartition) -> int:
        return self.positions[partition]


# ---------------------------------------------------------------------------------------------
# Google Pub/Sub
# ---------------------------------------------------------------------------------------------

class FakePubSub:
    """Topics, subscriptions with ack deadlines, delivery attempts and dead-letter policies.

    Reproduced: a message published to a topic is copied to every subscription existing at
    that moment (none: it is dropped, as Pub/Sub does); ``pull`` leases messages for the
    subscription's ack deadline (or the one set by ``modify_ack_deadline``) and hands out
    expired leases again with ``delivery_attempt`` + 1 (counted only when the subscription
    has a dead-letter policy, else 0); past ``max_delivery_attempts`` a message is forwarded
    to the dead-letter topic; an ack with a stale ack id is ignored; ``NotFound`` /
    ``AlreadyExists`` as the service raises them. Thread-safe: the adapter calls from
    executor threads. ``available = False`` makes every call fail with ``ServiceUnavailable``.
    """

    def __init__(self) -> None:
        self.topics: set[str] = set()
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.available = True
        self._lock = threading.Condition()

    def module(self) -> SimpleNamespace:
        return SimpleNamespace(PublisherClient=_bound(FakePublisherClient, self),
                               SubscriberClient=_bound(FakeSubscriberClient, self),
                               AlreadyExists=gexc.AlreadyExists, DeadlineExceeded=gexc.DeadlineExceeded)

    def check(self) -> None:
        if not self.available:
            raise gexc.ServiceUnavailable("fake Pub/Sub is down")

    def deliver(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.check()
        if topic not in self.topics:
            raise gexc.NotFound(f"Topic not found: {topic}")
        message_id = str(uuid.uuid4().int % 10**16)
        published = Timestamp()
        published.GetCurrentTime()
        with self._lock:
            for subscription in self.subscriptions.values():
                if subscription["topic"] == topic:
                    subscription["messages"][message_id] = {
                        "message": ptypes.PubsubMessage(data=data, attributes=attributes,
                                                        message_id=message_id, publish_time=published),
                        "attempts": 0, "leased_until": 0.0, "ack_id": None}
            self._lock.notify_all()
        return message_id

    def waiting(self, subscription: str) -> int:
        return len(self.subscriptions[subscription]["messages"])


def _request(kind: type, request: dict[str, Any] | None) -> Any:
    """Parse ``request`` into the real protobuf request type (unknown fields raise)."""
    return kind(request or {})


class FakePublisherClient:
    topic_path = staticmethod(pubsub_v1.PublisherClient.topic_path)

    def __init__(self, hub: FakePubSub, **kwargs: Any) -> None:
        _bind(pubsub_v1.PublisherClient.__init__, **kwargs)
        self.hub = hub

    def create_topic(self, request: dict | None = None, **kwargs: Any) -> ptypes.Topic:
        _bind(pubsub_v1.PublisherClient.create_topic, request, **kwargs)
        topic = _request(ptypes.Topic, request)
        self.hub.check()
        if topic.name in self.hub.topics:
            raise gexc.AlreadyExists(f"Topic already exists: {topic.name}")
        self.hub.topics.add(topic.name)
        return topic

    def list_topics(self, request: dict | None = None, **kwargs: Any) -> list[ptypes.Topic]:
        _bind(pubsub_v1.PublisherClient.list_topics, request, **kwargs)
        _request(ptypes.ListTopicsRequest, request)
        self.hub.check()
        return [ptypes.Topic(name=name) for name in sorted(self.hub.topics)]

    def publish(self, topic: str, data: bytes, ordering_key: str = "",
                **attrs: str) -> concurrent.futures.Future:
        _bind(pubsub_v1.PublisherClient.publish, topic, data, ordering_key, **attrs)
        assert isinstance(data, bytes) and all(isinstance(v, str) for v in attrs.values()), attrs
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(self.hub.deliver(topic, data, attrs))
        except Exception as exc:  # noqa: BLE001 - the real client reports errors through the future
            future.set_exception(exc)
        return future

    def stop(self) -> None:
        pass


class FakeSubscriberClient:
    subscription_path = staticmethod(pubsub_v1.SubscriberClient.subscription_path)

    def __init__(self, hub: FakePubSub, **kwargs: Any) -> None:
        _bind(pubsub_v1.SubscriberClient.__init__, **kwargs)
        self.hub = hub
        self.closed = False

    def create_subscription(self, request: dict | None = None, **kwargs: Any) -> ptypes.Subscription:
        _bind(pubsub_v1.SubscriberClient.create_subscription, request, **kwargs)
        subscription = _request(ptypes.Subscription, request)
        self.hub.check()
        if subscription.topic not in self.hub.topics:
            raise gexc.NotFound(f"Topic not found: {subscription.topic}")
        with self.hub._lock:
            if subscription.name in self.hub.subscriptions:
                raise gexc.AlreadyExists(f"Subscription already exists: {subscription.name}")
            policy = subscription.dead_letter_policy
            self.hub.subscriptions[subscription.name] = {
                "topic": subscription.topic, "deadline": subscription.ack_deadline_seconds or 10,
                "dlq": policy.dead_letter_topic or None, "max_attempts": policy.max_delivery_attempts or 5,
                "messages": {}}
        return subscription

    def _subscription(self, name: str) -> dict[str, Any]:
        self.hub.check()
        assert not self.closed, "call on a closed SubscriberClient"
        found = self.hub.subscriptions.get(name)
        if found is None:
            raise gexc.NotFound(f"Subscription does not exist: {name}")
        return found

    def _take(self, subscription: dict[str, Any], limit: int) -> list[ptypes.ReceivedMessage]:
        now, out = time.monotonic(), []
        for message_id, entry in list(subscription["messages"].items()):
            if len(out) >= limit:
                break
            if entry["leased_until"] > now:
                continue
            if subscription["dlq"] and entry["attempts"] >= subscription["max_attempts"]:
                del subscription["messages"][message_id]  # the dead-letter policy forwards it
                message = entry["message"]
                self.hub.deliver(subscription["dlq"], message.data, dict(message.attributes))
                continue
            entry["attempts"] += 1
            entry["ack_id"] = f"{message_id}:{uuid.uuid4().hex}"  # a fresh ack id per delivery
            entry["leased_until"] = now + subscription["deadline"]
            attempt = entry["attempts"] if subscription["dlq"] else 0
            out.append(ptypes.ReceivedMessage(ack_id=entry["ack_id"], message=entry["message"],
                                              delivery_attempt=attempt))
        return out

    def pull(self, request: dict | None = None, **kwargs: Any) -> ptypes.PullResponse:
        _bind(pubsub_v1.SubscriberClient.pull, request, **kwargs)
        parsed = _request(ptypes.PullRequest, request)
        timeout = kwargs.get("timeout") or 10.0
        deadline = time.monotonic() + timeout
        with self.hub._lock:
            while True:
                subscription = self._subscription(parsed.subscription)
                received = self._take(subscription, parsed.max_messages)
                remaining = deadline - time.monotonic()
                if received:
                    return ptypes.PullResponse(received_messages=received)
                if remaining <= 0:
                    raise gexc.DeadlineExceeded("pull deadline exceeded")
                self.hub._lock.wait(min(remaining, 0.05))  # also notices leases running out

    def _entries(self, subscription: dict[str, Any], ack_ids: list[str]):
        for ack_id in ack_ids:
            entry = subscription["messages"].get(ack_id.split(":")[0])
            if entry is not None and entry["ack_id"] == ack_id:  # a stale ack id does nothing
                yield ack_id.split(":")[0], entry

    def acknowledge(self, request: dict | None = None, **kwargs: Any) -> None:
        _bind(pubsub_v1.SubscriberClient.acknowledge, request, **kwargs)
        parsed = _request(ptypes.AcknowledgeRequest, request)
        with self.hub._lock:
            subscription = self._subscription(parsed.subscription)
            for message_id, _ in list(self._entries(subscription, list(parsed.ack_ids))):
                del subscription["messages"][message_id]

    def modify_ack_deadline(self, request: dict | None = None, **kwargs: Any) -> None:
        _bind(pubsub_v1.SubscriberClient.modify_ack_deadline, request, **kwargs)
        parsed = _request(ptypes.ModifyAckDeadlineRequest, request)
        assert 0 <= parsed.ack_deadline_seconds <= 600
        with self.hub._lock:
            subscription = self._subscription(parsed.subscription)
            for _, entry in self._entries(subscription, list(parsed.ack_ids)):
                entry["leased_until"] = time.monotonic() + parsed.ack_deadline_seconds
            self.hub._lock.notify_all()

    def close(self) -> None:
        self.closed = True
