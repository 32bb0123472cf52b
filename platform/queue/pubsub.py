"""The ``pubsub`` backend: Google Cloud Pub/Sub (google-cloud-pubsub).

* Topic ``<prefix><topic>``; each consumer group is a subscription ``<prefix><topic>-<group>``;
  dead letters go to the topic ``<prefix><topic>-dlq``, retained by its subscription of the
  same name. Subscriptions are created with a dead-letter policy (max delivery attempts =
  max attempts + 1, within Pub/Sub's 5–100, a backstop: the adapter dead-letters first, with
  the reason), which is also what makes Pub/Sub count ``delivery_attempt``.
* With ``OFSRE_QUEUE_AUTO_CREATE`` (default on) the topics and subscriptions are created on
  first use; publishing also creates the subscription of the default group ``worker``, so
  messages published before the worker's first start are kept.
* Synchronous pull, ack and modify-ack-deadline run in the event loop's executor (the client
  is blocking); publishing awaits the client's future. Headers are message attributes.
* ``ack`` = acknowledge; ``nack`` = modify ack deadline to the retry delay (0: now); a lease
  shorter than the subscription's ack deadline (minimum 10 s) is applied per message.
* ``depth`` is not available from the Pub/Sub API (the backlog is a Cloud Monitoring metric,
  ``subscription/num_undelivered_messages``, which KEDA's ``gcp-pubsub`` scaler reads):
  it raises :class:`UnsupportedOperation`.

``PUBSUB_EMULATOR_HOST`` is honoured by the client library. The client classes come from
the ``pubsub=`` argument (a namespace like :func:`client_module`), so tests substitute a stand-in.
"""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from ._config import QueueConfig
from ._core import (
    ATTEMPT_HEADER,
    KEY_HEADER,
    MESSAGE_ID_HEADER,
    REASON_HEADER,
    DeadLetter,
    Message,
    Queue,
    UnsupportedOperation,
    check_topic,
    decode_body,
)

__all__ = ["PubSubQueue", "client_module"]

DEFAULT_GROUP = "worker"
_MIN_DEADLINE, _MAX_DEADLINE = 10, 600         # subscription ack deadline bounds (seconds)
_MIN_DELIVERIES, _MAX_DELIVERIES = 5, 100       # dead-letter policy bounds


def client_module() -> SimpleNamespace:
    """The google-cloud-pubsub names the adapter uses (the boundary a test stand-in reproduces)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    return SimpleNamespace(PublisherClient=pubsub_v1.PublisherClient,
                           SubscriberClient=pubsub_v1.SubscriberClient,
                           AlreadyExists=exceptions.AlreadyExists,
                           DeadlineExceeded=exceptions.DeadlineExceeded)


class PubSubQueue(Queue):
    backend = "pubsub"
    long_polls = True

    def __init__(self, config: QueueConfig, *, pubsub: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if not config.pubsub_project:
            raise ValueError("the pubsub backend needs OFSRE_QUEUE_PUBSUB_PROJECT (or GOOGLE_CLOUD_PROJECT)")
        self._module = pubsub
        self._publisher: Any = None
        self._subscriber: Any = None
        self._ready: set[tuple[str, str | None]] = set()  # (topic, group) declared; group None: the topics
        self._lock = asyncio.Lock()
        self._lease = max(1, math.ceil(config.lease_seconds))
        self._deadline = min(_MAX_DEADLINE, max(_MIN_DEADLINE, self._lease))

    @classmethod
    async def open(cls, config: QueueConfig, *, pubsub: Any = None, **kwargs: Any) -> PubSubQueue:
        queue = cls(config, pubsub=pubsub or client_module(), **kwargs)
        queue._publisher = queue._module.PublisherClient()
        queue._subscriber = queue._module.SubscriberClient()
        return queue

    async def _call(self, function: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in the executor."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(function, **kwargs))

    # -- naming and declaration ----------------------------------------------------------------
    def _topic_path(self, topic: str, suffix: str = "") -> str:
        return self._publisher.topic_path(self.config.pubsub_project,
                                          f"{self.config.name_prefix}{topic}{suffix}")

    def _subscription_path(self, topic: str, suffix: str) -> str:
        return self._subscriber.subscription_path(self.config.pubsub_project,
                                                  f"{self.config.name_prefix}{topic}-{suffix}")

    async def _create(self, function: Any, request: dict[str, Any]) -> None:
        try:
            await self._call(function, request=request)
        except self._module.AlreadyExists:
            pass

    async def _ensure(self, topic: str, group: str | None) -> None:
        """Declare the topic, its DLQ (and ``group``'s subscription) once per process."""
        if not self.config.auto_create or (topic, group) in self._ready:
            return
        async with self._lock:
            if (topic, None) not in self._ready:
                for suffix in ("", "-dlq"):
                    await self._create(self._publisher.create_topic,
                                       {"name": self._topic_path(topic, suffix)})
                await self._create(self._subscriber.create_subscription, {
                    "name": self._subscription_path(topic, "dlq"), "topic": self._topic_path(topic, "-dlq")})
                self._ready.add((topic, None))
            if group is not None and (topic, group) not in self._ready:
                deliveries = min(_MAX_DELIVERIES, max(_MIN_DELIVERIES, self.config.max_attempts + 1))
                await self._create(self._subscriber.create_subscription, {
                    "name": self._subscription_path(topic, group), "topic": self._topic_path(topic),
                    "ack_deadline_seconds": self._deadline,
                    "dead_letter_policy": {"dead_letter_topic": self._topic_path(topic, "-dlq"),
                                           "max_delivery_attempts": deliveries}})
                self._ready.add((topic, group))

    # -- the primitives --------------------------------------------------------------------
    async def _publish(self, path: str, payload: str, headers: dict[str, str]) -> None:
        future = self._publisher.publish(path, payload.encode(), **headers)
        await asyncio.wrap_future(future)

    async def _send(self, topic: str, payload: str, key: str | None, headers: dict[str, str]) -> str:
        await self._ensure(topic, DEFAULT_GROUP)
        message_id = str(uuid.uuid4())
        headers = {**headers, MESSAGE_ID_HEADER: message_id, **({KEY_HEADER: key} if key else {})}
        await self._publish(self._topic_path(topic), payload, headers)
        return message_id

    async def _pull(self, path: str, max_messages: int, wait_seconds: float) -> list[Any]:
        try:
            reply = await self._call(self._subscriber.pull,
                                     request={"subscription": path, "max_messages": max_messages},
                                     timeout=max(1.0, wait_seconds))
        except self._module.DeadlineExceeded:
            return []
        return list(reply.received_messages)

    async def _fetch(self, topic: str, group: str, max_messages: int, wait_seconds: float) -> list[Message]:
        await self._ensure(topic, group)
        path = self._subscription_path(topic, group)
        received = await self._pull(path, max_messages, wait_seconds)
        if received and self._lease < self._deadline:
            await self._modify(path, [r.ack_id for r in received], self._lease)
        out = []
        for item in received:
            headers = dict(item.message.attributes)
            out.append(Message(self, topic, group, id=headers.get(MESSAGE_ID_HEADER, item.message.message_id),
                               raw_body=item.message.data, headers=headers,
                               attempt=item.delivery_attempt or 1, receipt=(path, item.ack_id)))
        return out

    async def _modify(self, path: str, ack_ids: list[str], seconds: int) -> None:
        await self._call(self._subscriber.modify_ack_deadline, request={
            "subscription": path, "ack_ids": ack_ids, "ack_deadline_seconds": seconds})

    async def _ack(self, message: Message) -> None:
        path, ack_id = message.receipt
        await self._call(self._subscriber.acknowledge, request={"subscription": path, "ack_ids": [ack_id]})

    async def _retry(self, message: Message, delay_seconds: float) -> None:
        path, ack_id = message.receipt
        await self._modify(path, [ack_id], min(_MAX_DEADLINE, math.ceil(delay_seconds)))

    async def _release(self, messages: Sequence[Message]) -> None:
        for message in messages:
            await self._retry(message, 0)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        headers = {**message.headers, REASON_HEADER: reason, ATTEMPT_HEADER: str(message.attempt)}
        await self._publish(self._topic_path(message.topic, "-dlq"), message.payload, headers)
        await self._ack(message)

    # -- inspection --------------------------------------------------------------------------
    async def _ping(self) -> bool:
        try:
            request = {"project": f"projects/{self.config.pubsub_project}", "page_size": 1}
            await self._call(lambda **kw: next(iter(self._publisher.list_topics(**kw)), None),
                             request=request)
            return True
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False

    async def depth(self, topic: str, group: str = "worker") -> int:
        raise UnsupportedOperation(
            "Pub/Sub has no backlog API; read Cloud Monitoring's subscription/num_undelivered_messages "
            "(KEDA's gcp-pubsub scaler does)")

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        """Peek at the DLQ subscription: pull, then hand everything back (deadline 0)."""
        check_topic(topic)
        await self._ensure(topic, None)
        path = self._subscription_path(topic, "dlq")
        seen: list[Any] = []
        while len(seen) < limit:
            batch = await self._pull(path, limit - len(seen), 1.0)
            if not batch:
                break
            seen.extend(batch)
        if seen:
            await self._modify(path, [r.ack_id for r in seen], 0)
        seen.sort(key=lambda r: r.message.publish_time)
        return [_dead_letter_of(topic, r.message) for r in seen]

    async def _close(self) -> None:
        await self._call(self._subscriber.close)
        stop = getattr(self._publisher, "stop", None)
        if stop is not None:
            await self._call(stop)


def _dead_letter_of(topic: str, message: Any) -> DeadLetter:
    headers = dict(message.attributes)
    body, _ = decode_body(message.data)
    return DeadLetter(id=headers.get(MESSAGE_ID_HEADER, message.message_id), topic=topic, body=body,
                      headers=headers, attempt=int(headers.pop(ATTEMPT_HEADER, 0)),
                      reason=headers.pop(REASON_HEADER, ""))
