"""Fixtures for the queue tests: one harness per backend, for the shared contract suite.

=================  ==================================================================
Harness            What the queue talks to
=================  ==================================================================
``db-sqlite``      a real SQLite file (aiosqlite)
``db-postgresql``  the real PostgreSQL at 127.0.0.1:5432 (``OFSRE_TEST_DATABASE_URL``)
``sqs``            moto in server mode on 127.0.0.1 — real HTTP through aiobotocore
``kafka``          ``queue_fakes.FakeKafkaBroker`` at the aiokafka client boundary
``pubsub``         ``queue_fakes.FakePubSub`` at the google-cloud-pubsub client boundary
=================  ==================================================================
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from ofsre.platform.queue import Queue, QueueConfig, create_schema, open_queue

sys.path.insert(0, str(Path(__file__).parent))  # queue_fakes and queue_support, next to this file
from queue_fakes import FakeKafkaBroker, FakePubSub  # noqa: E402
from queue_support import FAST, PG_URL  # noqa: E402

BACKENDS = ("db-sqlite", "db-postgresql", "sqs", "kafka", "pubsub")


@dataclass
class Harness:
    """Opens queues of one backend, all sharing the same broker/database (like separate processes)."""

    name: str
    opener: Callable[..., Awaitable[Queue]]
    pending_of: Callable[[Queue, str], Awaitable[int]]
    counts_redelivery: bool = True  # Kafka has no delivery counter: a redelivery keeps its attempt
    fake: Any = None                # the in-memory broker, for the backends that have one
    opened: list[Queue] = field(default_factory=list)

    async def open(self, **config: Any) -> Queue:
        queue = await self.opener(**config)
        self.opened.append(queue)
        return queue

    async def pending(self, queue: Queue, topic: str) -> int:
        """Messages of ``topic`` not yet settled, as the broker sees them."""
        return await self.pending_of(queue, topic)


# ofsre.instrumentation.metrics caches metrics by id(registry): a registry collected after its
# test could hand its id, and so its stale metrics, to the next test's registry. Keep them alive.
_REGISTRIES: list[CollectorRegistry] = []


@pytest.fixture
def registry() -> CollectorRegistry:
    _REGISTRIES.append(CollectorRegistry())
    return _REGISTRIES[-1]


@pytest.fixture
def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def topic() -> str:
    """A fresh topic per test: PostgreSQL and the moto server are shared."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's server on a free loopback port, with dummy credentials for the AWS clients."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    saved = {k: os.environ.get(k)
             for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_EC2_METADATA_DISABLED="true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def _depth(queue: Queue, topic: str) -> int:
    return await queue.depth(topic)


@pytest.fixture(params=BACKENDS)
async def harness(request, tmp_path, registry, tracing):
    provider, _ = tracing
    telemetry = {"registry": registry, "tracer_provider": provider}
    name = request.param

    def config(**kw: Any) -> QueueConfig:
        return QueueConfig(**{**FAST, **kw})

    if name.startswith("db-"):
        url = f"sqlite+aiosqlite:///{tmp_path}/queue.db" if name == "db-sqlite" else PG_URL
        await create_schema(url)
        h = Harness(name, lambda **kw: open_queue(config(backend="db", database_url=url, **kw), **telemetry),
                    _depth)
    elif name == "sqs":
        endpoint = request.getfixturevalue("moto_endpoint")
        prefix = f"q{uuid.uuid4().hex[:8]}-"
        h = Harness(name, lambda **kw: open_queue(
            config(backend="sqs", endpoint_url=endpoint, region="us-east-1", name_prefix=prefix, **kw),
            **telemetry), _depth)
    elif name == "kafka":
        broker = FakeKafkaBroker(partitions=2)
        h = Harness(name, lambda **kw: open_queue(config(backend="kafka", **kw), kafka=broker.module(),
                                                  **telemetry),
                    _depth, counts_redelivery=False, fake=broker)
    else:
        hub = FakePubSub()

        async def waiting(queue: Queue, topic: str) -> int:
            return hub.waiting(f"projects/ofsre-test/subscriptions/{topic}-worker")

        h = Harness(name, lambda **kw: open_queue(config(backend="pubsub", pubsub_project="ofsre-test", **kw),
                                                  pubsub=hub.module(), **telemetry), waiting, fake=hub)
    yield h
    for queue in h.opened:
        await queue.close()
