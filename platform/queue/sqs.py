"""The ``sqs`` backend: Amazon SQS, optionally fed through SNS (aiobotocore).

* One SQS queue per topic, ``<prefix><topic>``, and its dead-letter queue ``<prefix><topic>-dlq``,
  attached by a redrive policy (``maxReceiveCount`` = max attempts + 1, a backstop: the
  adapter dead-letters explicitly first, with the reason).
* ``publish`` sends to the queue, or with ``OFSRE_QUEUE_SNS_TOPIC_ARN`` publishes to SNS,
  which fans out to the queue (raw message delivery). The ARN may contain ``{topic}``
  (one SNS topic per ofsre topic); without it every ofsre topic shares the one SNS topic
  and each queue's subscription filters on the ``ofsre-topic`` attribute.
* Headers (trace context, interaction id…) travel as message attributes; ``attempt`` is
  SQS's ``ApproximateReceiveCount``; the lease is the visibility timeout.
* ``ack`` = DeleteMessage; ``nack`` = ChangeMessageVisibility to the retry delay (0: now);
  dead letter = SendMessage to the DLQ with the reason, then DeleteMessage.
* With ``OFSRE_QUEUE_AUTO_CREATE`` (default on) missing queues, the SNS topic, the
  subscription and the queue policy letting SNS deliver are created on first use; turn it
  off where Terraform owns them.

Credentials come from the standard AWS chain. ``OFSRE_QUEUE_ENDPOINT_URL`` points both
clients at moto or LocalStack.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
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
    check_topic,
    decode_body,
)

__all__ = ["SqsQueue"]

TOPIC_ATTRIBUTE = "ofsre-topic"        # SNS filter policy key when topics share one SNS topic
_PACKED = "ofsre-headers"              # headers past SQS's ten attributes, as one JSON attribute
_MAX_ATTRIBUTES = 10
_MAX_WAIT_SECONDS = 20                 # SQS long-poll limit


def encode_attributes(headers: dict[str, str]) -> dict[str, dict[str, str]]:
    """Headers as SQS/SNS message attributes; beyond ten, the rest travel packed in one."""
    items = [(k, v) for k, v in headers.items() if v != ""]  # SQS rejects empty values
    if len(items) > _MAX_ATTRIBUTES:
        keep, rest = items[:_MAX_ATTRIBUTES - 1], dict(items[_MAX_ATTRIBUTES - 1:])
        items = [*keep, (_PACKED, json.dumps(rest))]
    return {k: {"DataType": "String", "StringValue": v} for k, v in items}


def decode_attributes(attributes: dict[str, dict[str, Any]] | None) -> dict[str, str]:
    headers = {k: v.get("StringValue", "") for k, v in (attributes or {}).items() if "StringValue" in v}
    packed = headers.pop(_PACKED, None)
    if packed:
        headers.update(json.loads(packed))
    return headers


class SqsQueue(Queue):
    """The ``sqs`` backend. ``group`` is not used: consumers of a topic share its one queue."""

    backend = "sqs"
    long_polls = True

    def __init__(self, config: QueueConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._stack = AsyncExitStack()
        self._sqs: Any = None
        self._sns: Any = None
        self._urls: dict[str, tuple[str, str]] = {}      # topic -> (queue URL, DLQ URL)
        self._topic_arns: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lease = max(1, math.ceil(config.lease_seconds))
        self._wait = min(_MAX_WAIT_SECONDS, max(1, math.ceil(config.poll_max_seconds)))

    @classmethod
    async def open(cls, config: QueueConfig, **kwargs: Any) -> SqsQueue:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        queue = cls(config, **kwargs)
        session = get_session()
        # The read timeout outlasts the longest long poll; few retries keep readiness probes short.
        client_config = AioConfig(connect_timeout=5, read_timeout=_MAX_WAIT_SECONDS + 10,
                                  retries={"mode": "standard", "max_attempts": 3})
        options = {"region_name": config.region, "endpoint_url": config.endpoint_url, "config": client_config}
        queue._sqs = await queue._stack.enter_async_context(session.create_client("sqs", **options))
        if config.sns_topic_arn:
            queue._sns = await queue._stack.enter_async_context(session.create_client("sns", **options))
        return queue

    # -- naming and declaration ----------------------------------------------------------------
    def _name(self, topic: str) -> str:
        return f"{self.config.name_prefix}{topic}"

    async def _ensure(self, topic: str) -> tuple[str, str]:
        """(queue URL, DLQ URL) of ``topic``, declared on first use (once per process)."""
        found = self._urls.get(topic)
        if found is not None:
            return found
        async with self._locks.setdefault(topic, asyncio.Lock()):
            if topic not in self._urls:
                dlq_url = await self._queue_url(f"{self._name(topic)}-dlq", {})
                dlq_arn = await self._arn(dlq_url)
                redrive = {"deadLetterTargetArn": dlq_arn,
                           "maxReceiveCount": str(self.config.max_attempts + 1)}
                url = await self._queue_url(self._name(topic), {"VisibilityTimeout": str(self._lease),
                                                                "RedrivePolicy": json.dumps(redrive)})
                if self._sns is not None:
                    await self._subscribe_to_sns(topic, url)
                self._urls[topic] = (url, dlq_url)
        return self._urls[topic]

    async def _queue_url(self, name: str, attributes: dict[str, str]) -> str:
        try:
            return (await self._sqs.get_queue_url(QueueName=name))["QueueUrl"]
        except self._sqs.exceptions.QueueDoesNotExist:
            if not self.config.auto_create:
                raise
        return (await self._sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]

    async def _arn(self, url: str) -> str:
        reply = await self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return reply["Attributes"]["QueueArn"]

    def _sns_arn(self, topic: str) -> str:
        template = self.config.sns_topic_arn
        assert template is not None  # called only with SNS on (``open`` makes ``_sns`` from it)
        return self._topic_arns.get(topic) or template.replace("{topic}", self._name(topic))

    def _shared_sns_topic(self) -> bool:
        return "{topic}" not in (self.config.sns_topic_arn or "")

    async def _subscribe_to_sns(self, topic: str, url: str) -> None:
        """Create the SNS topic and subscribe the queue to it (raw delivery, filtered when shared)."""
        if not self.config.auto_create:
            return
        arn = self._sns_arn(topic)
        arn = (await self._sns.create_topic(Name=arn.rsplit(":", 1)[-1]))["TopicArn"]
        self._topic_arns[topic] = arn
        queue_arn = await self._arn(url)
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": arn}}}]}
        await self._sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        attributes = {"RawMessageDelivery": "true"}
        if self._shared_sns_topic():
            attributes["FilterPolicy"] = json.dumps({TOPIC_ATTRIBUTE: [topic]})
        await self._sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes)

    # -- the primitives --------------------------------------------------------------------
    async def _send(self, topic: str, payload: str, key: str | None, headers: dict[str, str]) -> str:
        message_id = str(uuid.uuid4())
        headers = {**headers, MESSAGE_ID_HEADER: message_id, **({KEY_HEADER: key} if key else {})}
        url, _ = await self._ensure(topic)  # also makes sure the SNS subscription exists before publishing
        if self._sns is None:
            await self._sqs.send_message(QueueUrl=url, MessageBody=payload,
                                         MessageAttributes=encode_attributes(headers))
        else:
            if self._shared_sns_topic():
                headers[TOPIC_ATTRIBUTE] = topic
            await self._sns.publish(TopicArn=self._sns_arn(topic), Message=payload,
                                    MessageAttributes=encode_attributes(headers))
        return message_id

    async def _fetch(self, topic: str, group: str, max_messages: int, wait_seconds: float) -> list[Message]:
        url, _ = await self._ensure(topic)
        reply = await self._sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=min(10, max_messages), WaitTimeSeconds=self._wait,
            VisibilityTimeout=self._lease, MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"])
        out = []
        for raw in reply.get("Messages", []):
            headers = decode_attributes(raw.get("MessageAttributes"))
            headers.pop(TOPIC_ATTRIBUTE, None)
            out.append(Message(self, topic, group, id=headers.get(MESSAGE_ID_HEADER, raw["MessageId"]),
                               raw_body=raw["Body"], headers=headers,
                               attempt=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                               receipt=raw["ReceiptHandle"]))
        return out

    async def _ack(self, message: Message) -> None:
        url, _ = await self._ensure(message.topic)
        await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message.receipt)

    async def _retry(self, message: Message, delay_seconds: float) -> None:
        url, _ = await self._ensure(message.topic)
        await self._sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message.receipt,
                                                  VisibilityTimeout=math.ceil(delay_seconds))

    async def _release(self, messages: Sequence[Message]) -> None:
        for message in messages:
            await self._retry(message, 0)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        url, dlq_url = await self._ensure(message.topic)
        headers = {**message.headers, REASON_HEADER: reason, ATTEMPT_HEADER: str(message.attempt)}
        await self._sqs.send_message(QueueUrl=dlq_url, MessageBody=message.payload,
                                     MessageAttributes=encode_attributes(headers))
        await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message.receipt)

    # -- inspection --------------------------------------------------------------------------
    async def _ping(self) -> bool:
        try:
            await self._sqs.list_queues(QueueNamePrefix=self.config.name_prefix or "ofsre", MaxResults=1)
            return True
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False

    async def depth(self, topic: str, group: str = "worker") -> int:
        """Visible + in-flight messages, as KEDA's ``aws-sqs-queue`` scaler counts them."""
        url, _ = await self._ensure(check_topic(topic))
        reply = await self._sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in reply["Attributes"].values())

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        """Peek at the DLQ: receive (hidden for one lease), then make them visible again."""
        _, dlq_url = await self._ensure(check_topic(topic))
        seen: list[dict[str, Any]] = []
        while len(seen) < limit:
            reply = await self._sqs.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=min(10, limit - len(seen)), WaitTimeSeconds=0,
                VisibilityTimeout=self._lease, MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp"])
            batch = reply.get("Messages", [])
            if not batch:
                break
            seen.extend(batch)
        for raw in seen:
            await self._sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=raw["ReceiptHandle"],
                                                      VisibilityTimeout=0)
        seen.sort(key=lambda raw: int(raw.get("Attributes", {}).get("SentTimestamp", 0)))
        return [_dead_letter_of(topic, raw) for raw in seen]

    async def _close(self) -> None:
        await self._stack.aclose()


def _dead_letter_of(topic: str, raw: dict[str, Any]) -> DeadLetter:
    headers = decode_attributes(raw.get("MessageAttributes"))
    body, _ = decode_body(raw["Body"])
    return DeadLetter(id=headers.get(MESSAGE_ID_HEADER, raw["MessageId"]), topic=topic, body=body,
                      headers=headers, attempt=int(headers.pop(ATTEMPT_HEADER, 0)),
                      reason=headers.pop(REASON_HEADER, ""))
