"""The SQS/SNS backend against moto in server mode: real HTTP requests through aiobotocore."""

from __future__ import annotations

import json
import uuid

import pytest
from aiobotocore.session import get_session
from opentelemetry.sdk.trace import TracerProvider
from queue_support import FAST, take

from ofsre.platform.queue import QueueConfig, open_queue
from ofsre.platform.queue.sqs import decode_attributes, encode_attributes

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
async def make(moto_endpoint):
    opened = []
    prefix = f"s{uuid.uuid4().hex[:8]}-"

    async def make(**kw):
        config = QueueConfig(**{**FAST, "backend": "sqs", "endpoint_url": moto_endpoint, "region": REGION,
                                "name_prefix": prefix, **kw})
        queue = await open_queue(config, registry=None)
        opened.append(queue)
        return queue

    make.prefix = prefix
    yield make
    for queue in opened:
        await queue.close(timeout=0)


@pytest.fixture
async def aws(moto_endpoint):
    """Raw boto clients on the same moto server, to look at what the adapter created."""
    session = get_session()
    async with session.create_client("sqs", region_name=REGION, endpoint_url=moto_endpoint) as sqs, \
            session.create_client("sns", region_name=REGION, endpoint_url=moto_endpoint) as sns:
        yield sqs, sns


@pytest.mark.parametrize("arn", ["arn:aws:sns:us-east-1:123456789012:{topic}",
                                 "arn:aws:sns:us-east-1:123456789012:ofsre-shared-{uid}"],
                         ids=["sns-topic-per-queue", "sns-shared-topic-filtered"])
async def test_publishing_through_sns_fans_out_to_the_queue_with_the_trace(make, aws, topic, arn):
    arn = arn.replace("{uid}", uuid.uuid4().hex[:6])
    queue = await make(sns_topic_arn=arn)
    other = f"{topic}-other"
    with TracerProvider().get_tracer("test").start_as_current_span("publish"):
        sent = await queue.publish(topic, {"payment_id": "p-1"}, key="p-1")
    await queue.publish(other, {"payment_id": "elsewhere"})

    async with queue.subscribe(topic) as messages:
        msg = await take(messages)
        assert (msg.id, msg.body) == (sent, {"payment_id": "p-1"})
        assert msg.headers["traceparent"].startswith("00-") and msg.headers["ofsre-key"] == "p-1"
        await msg.ack()
    assert await queue.depth(topic) == 0
    assert await queue.depth(other) == 1  # the other topic's message went to its own queue only

    _, sns = aws
    topics = [t["TopicArn"] for t in (await sns.list_topics())["Topics"]]
    subscriptions = (await sns.list_subscriptions())["Subscriptions"]
    ours = [s for s in subscriptions if s["Endpoint"].endswith(f":{make.prefix}{topic}")]
    assert len(ours) == 1 and ours[0]["TopicArn"] in topics and ours[0]["Protocol"] == "sqs"
    subscription = await sns.get_subscription_attributes(SubscriptionArn=ours[0]["SubscriptionArn"])
    attributes = subscription["Attributes"]
    assert attributes["RawMessageDelivery"] == "true"


async def test_queues_get_a_dead_letter_queue_as_redrive_backstop(make, aws, topic):
    queue = await make(max_attempts=4, lease_seconds=7)
    await queue.publish(topic, {"n": 1})
    sqs, _ = aws
    url = (await sqs.get_queue_url(QueueName=f"{make.prefix}{topic}"))["QueueUrl"]
    attributes = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{make.prefix}{topic}-dlq"
    assert int(redrive["maxReceiveCount"]) == 5  # one more than the adapter's own limit
    assert attributes["VisibilityTimeout"] == "7"


async def test_depth_counts_in_flight_messages_like_keda(make, topic):
    queue = await make()
    await queue.publish(topic, {"n": 1})
    await queue.publish(topic, {"n": 2})
    async with queue.subscribe(topic) as messages:
        msg = await take(messages)
        assert await queue.depth(topic) == 2  # one visible + one in flight
        await msg.ack()
    assert await queue.depth(topic) == 1


async def test_without_auto_create_a_missing_queue_is_an_error(make, topic):
    queue = await make(auto_create=False)
    with pytest.raises(Exception, match="NonExistentQueue|does not exist"):
        await queue.publish(topic, {"n": 1})


async def test_ping_is_false_when_sqs_is_unreachable():
    queue = await open_queue(QueueConfig(backend="sqs", endpoint_url="http://127.0.0.1:1", region=REGION),
                             registry=None)
    try:
        assert await queue.ping() is False
    finally:
        await queue.close()


def test_headers_beyond_ten_attributes_travel_packed():
    headers = {f"h{n:02d}": f"v{n}" for n in range(12)} | {"empty": ""}
    attributes = encode_attributes(headers)
    assert len(attributes) == 10 and all(a["DataType"] == "String" for a in attributes.values())
    assert decode_attributes(attributes) == {k: v for k, v in headers.items() if v}
