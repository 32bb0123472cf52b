"""Choosing and configuring the backend; what importing the package costs; argument checks."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from queue_fakes import FakeKafkaBroker

from ofsre.platform.queue import QueueConfig, create_schema, open_queue
from ofsre.platform.queue.db import DatabaseQueue
from ofsre.platform.queue.kafka import KafkaQueue
from ofsre.platform.settings import Settings


def test_importing_the_package_loads_no_backend_client_library():
    code = ("import sys, ofsre.platform.queue; "
            "print(' '.join(m for m in ('aiobotocore', 'botocore', 'aiokafka', 'google.cloud', 'sqlalchemy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_environment_configures_the_queue(monkeypatch, tmp_path, caplog):
    for name, value in {"OFSRE_QUEUE_BACKEND": "kafka", "OFSRE_QUEUE_MAX_ATTEMPTS": "7",
                        "OFSRE_QUEUE_LEASE_SECONDS": "12.5", "OFSRE_QUEUE_BATCH_SIZE": "oops",
                        "OFSRE_QUEUE_AUTO_CREATE": "off", "OFSRE_QUEUE_KAFKA_BOOTSTRAP": "kafka:9092",
                        "OFSRE_SERVICE": "worker", "OFSRE_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OFSRE_DATABASE_URL", raising=False)
    config = QueueConfig.resolve()
    assert (config.backend, config.max_attempts, config.lease_seconds) == ("kafka", 7, 12.5)
    assert (config.auto_create, config.kafka_bootstrap, config.service) == (False, "kafka:9092", "worker")
    assert config.batch_size == 1 and "OFSRE_QUEUE_BATCH_SIZE" in caplog.text  # bad value: logged, default
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path}/ofsre.db"


def test_a_settings_object_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OFSRE_QUEUE_BACKEND", "sqs")
    monkeypatch.setenv("OFSRE_QUEUE_MAX_ATTEMPTS", "9")
    platform_settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db", queue_backend="db")
    config = QueueConfig.resolve(platform_settings)
    assert (config.backend, config.database_url, config.max_attempts) == ("db",
                                                                          platform_settings.database_url, 9)
    duck = SimpleNamespace(queue_backend="db", queue_max_attempts=2, database_url="sqlite+aiosqlite:///x.db")
    assert QueueConfig.resolve(duck).max_attempts == 2


@pytest.mark.parametrize("bad", [{"backend": "rabbitmq"}, {"max_attempts": 0}, {"lease_seconds": 0},
                                 {"poll_min_seconds": 2, "poll_max_seconds": 1}])
def test_invalid_configuration_fails_at_start(bad):
    with pytest.raises(ValueError):
        QueueConfig(**bad)


async def test_open_queue_picks_the_backend(monkeypatch, tmp_path):
    monkeypatch.setenv("OFSRE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/q.db")
    monkeypatch.delenv("OFSRE_QUEUE_BACKEND", raising=False)
    db = await open_queue(registry=None)
    kafka = await open_queue(QueueConfig(backend="kafka"), service="worker", kafka=FakeKafkaBroker().module(),
                             registry=None)
    try:
        assert isinstance(db, DatabaseQueue) and isinstance(kafka, KafkaQueue)
        assert kafka.config.service == "worker"
    finally:
        await db.close()
        await kafka.close()


async def test_publish_checks_its_arguments(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/q.db"
    await create_schema(url)
    queue = await open_queue(QueueConfig(database_url=url), registry=None)
    try:
        with pytest.raises(TypeError):
            await queue.publish("pix-payments", ["not", "a", "dict"])
        with pytest.raises(ValueError, match="invalid topic"):
            await queue.publish("pix payments!", {"n": 1})
        with pytest.raises(TypeError):
            await queue.publish("pix-payments", {"when": object()})  # not JSON-serialisable
        assert await queue.depth("pix-payments") == 0
    finally:
        await queue.close()
