"""The queue's configuration: explicit value, then the settings object, then ``OFSRE_*``, then a default.

``QueueConfig.resolve(settings)`` accepts ``None``, a :class:`QueueConfig`, or any object
with attributes (the platform's ``Settings``): ``database_url``, ``data_dir``, ``service``
or ``queue_<field>`` (``queue_backend``, ``queue_max_attempts``…) wins over the environment. A malformed environment value is logged and its default used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["QueueConfig", "BACKENDS"]

_log = logging.getLogger("ofsre.platform.queue")

BACKENDS = ("db", "sqs", "kafka", "pubsub")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SHARED = frozenset({"service", "database_url", "data_dir"})


@dataclass(frozen=True)
class QueueConfig:
    """Every knob of the queue (environment variable in brackets; README.md has the full table).

    backend              [OFSRE_QUEUE_BACKEND] db | sqs | kafka | pubsub
    service              [OFSRE_SERVICE, OTEL_SERVICE_NAME] ``service`` label of the queue metrics
    max_attempts         [OFSRE_QUEUE_MAX_ATTEMPTS] deliveries before a message is dead-lettered
    lease_seconds        [OFSRE_QUEUE_LEASE_SECONDS] visibility timeout / ack deadline of a delivery
    retry_delay_seconds  [OFSRE_QUEUE_RETRY_DELAY_SECONDS] wait before a nacked message is redelivered
    batch_size           [OFSRE_QUEUE_BATCH_SIZE] messages claimed per fetch
    poll_min_seconds     [OFSRE_QUEUE_POLL_MIN_SECONDS] first wait after an empty fetch (doubles…)
    poll_max_seconds     [OFSRE_QUEUE_POLL_MAX_SECONDS] …up to this
    auto_create          [OFSRE_QUEUE_AUTO_CREATE] create missing queues/topics/subscriptions (cloud backends)
    database_url         [OFSRE_DATABASE_URL] db backend (default: SQLite in OFSRE_DATA_DIR)
    data_dir             [OFSRE_DATA_DIR]
    name_prefix          [OFSRE_QUEUE_NAME_PREFIX] prefix of SQS queue / Kafka / Pub/Sub topic names
    endpoint_url         [OFSRE_QUEUE_ENDPOINT_URL] sqs: SQS/SNS endpoint (moto, LocalStack)
    region               [OFSRE_QUEUE_REGION, AWS_REGION, AWS_DEFAULT_REGION] sqs
    sns_topic_arn        [OFSRE_QUEUE_SNS_TOPIC_ARN] sqs: publish through SNS (``{topic}`` is substituted)
    kafka_bootstrap      [OFSRE_QUEUE_KAFKA_BOOTSTRAP] kafka: bootstrap servers
    pubsub_project       [OFSRE_QUEUE_PUBSUB_PROJECT, GOOGLE_CLOUD_PROJECT] pubsub
    """

    backend: str = "db"
    service: str = "ofsre"
    max_attempts: int = 5
    lease_seconds: float = 30.0
    retry_delay_seconds: float = 0.0
    batch_size: int = 1
    poll_min_seconds: float = 0.05
    poll_max_seconds: float = 1.0
    auto_create: bool = True
    database_url: str = ""
    data_dir: Path = Path("var")
    name_prefix: str = ""
    endpoint_url: str | None = None
    region: str = "sa-east-1"
    sns_topic_arn: str | None = None
    kafka_bootstrap: str = "127.0.0.1:9092"
    pubsub_project: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown queue backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.max_attempts < 1 or self.batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        if self.lease_seconds <= 0 or self.poll_min_seconds <= 0 or self.poll_max_seconds < self.poll_min_seconds:
            raise ValueError("lease_seconds and poll_min_seconds must be > 0 and poll_max >= poll_min")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{Path(self.data_dir)}/ofsre.db")

    @classmethod
    def resolve(cls, settings: Any = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> QueueConfig:
        """Build the config from ``overrides``, then ``settings`` attributes, then the environment."""
        if isinstance(settings, QueueConfig):
            return settings.replace(**overrides) if overrides else settings
        env = os.environ if environ is None else environ
        values = _from_env(env)
        if settings is not None:
            for f in fields(cls):
                # Shared knobs keep their own name on the settings object; the queue's are ``queue_*``.
                attr = f.name if f.name in _SHARED else f"queue_{f.name}"
                value = getattr(settings, attr, None)
                if value not in (None, ""):
                    values[f.name] = value
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> QueueConfig:
        return QueueConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The fields the environment sets (unset variables are left out, so defaults apply)."""
    out: dict[str, Any] = {}

    def text(field: str, *names: str) -> None:
        for name in names:
            raw = env.get(name, "").strip()
            if raw:
                out[field] = raw
                return

    def number(field: str, name: str, kind: type, minimum: float) -> None:
        raw = env.get(name, "").strip()
        if not raw:
            return
        try:
            value = kind(raw)
            if value < minimum:
                raise ValueError(f"below {minimum}")
        except ValueError as exc:
            _log.warning("%s=%r is invalid (%s); using the default", name, raw, exc)
            return
        out[field] = value

    text("backend", "OFSRE_QUEUE_BACKEND")
    text("service", "OFSRE_SERVICE", "OTEL_SERVICE_NAME")
    number("max_attempts", "OFSRE_QUEUE_MAX_ATTEMPTS", int, 1)
    number("lease_seconds", "OFSRE_QUEUE_LEASE_SECONDS", float, 0.001)
    number("retry_delay_seconds", "OFSRE_QUEUE_RETRY_DELAY_SECONDS", float, 0)
    number("batch_size", "OFSRE_QUEUE_BATCH_SIZE", int, 1)
    number("poll_min_seconds", "OFSRE_QUEUE_POLL_MIN_SECONDS", float, 0.001)
    number("poll_max_seconds", "OFSRE_QUEUE_POLL_MAX_SECONDS", float, 0.001)
    raw = env.get("OFSRE_QUEUE_AUTO_CREATE", "").strip().lower()
    if raw in _TRUE | _FALSE:
        out["auto_create"] = raw in _TRUE
    elif raw:
        _log.warning("OFSRE_QUEUE_AUTO_CREATE=%r is not a boolean; using the default", raw)
    text("database_url", "OFSRE_DATABASE_URL")
    if env.get("OFSRE_DATA_DIR", "").strip():
        out["data_dir"] = Path(env["OFSRE_DATA_DIR"].strip())
    text("name_prefix", "OFSRE_QUEUE_NAME_PREFIX")
    text("endpoint_url", "OFSRE_QUEUE_ENDPOINT_URL")
    text("region", "OFSRE_QUEUE_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    text("sns_topic_arn", "OFSRE_QUEUE_SNS_TOPIC_ARN")
    text("kafka_bootstrap", "OFSRE_QUEUE_KAFKA_BOOTSTRAP")
    text("pubsub_project", "OFSRE_QUEUE_PUBSUB_PROJECT", "GOOGLE_CLOUD_PROJECT")
    return out
