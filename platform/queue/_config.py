"""The queue's configuration: explicit value, then the settings object, then ``OFSRE_*``, then a default.

``QueueConfig.resolve(settings)`` accepts ``None``, a :class:`QueueConfig`, or any object
with attributes (the platform's ``Settings``): ``database_url``, ``data_dir``, ``service``
or ``queue_<field>`` (``queue_backend``, ``queue_max_attempts``…) wins over the environment.
The variables are :class:`ofsre.instrumentation.config.Var` declarations below (the README's
table is generated from them); a malformed environment value is logged once and its default used,
except a backend name the queue does not know, which stops the start (``QueueConfig`` raises).
``OFSRE_DATABASE_URL`` and ``OFSRE_QUEUE_BACKEND`` are declared here, the lowest layer that reads them,
and imported by the services' settings and the runtime (``OFSRE_DATA_DIR`` is declared in
``ofsre.instrumentation._config``, since the PCM store reads it too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ofsre.instrumentation._config import DATA_DIR, SERVICE
from ofsre.instrumentation.config import BOOLEAN, TEXT, UNSET, Var, duration, integer

__all__ = ["QueueConfig", "BACKENDS", "DATABASE_URL", "DATA_DIR", "QUEUE_BACKEND"]

_LOGGER = "ofsre.platform.queue"

BACKENDS = ("db", "sqs", "kafka", "pubsub")
_SHARED = frozenset({"service", "database_url", "data_dir"})
_READER = "queue"


def _var(name: str, kind: Any, default: Any, doc: str, **more: Any) -> Var[Any]:
    return Var(name, kind, default, reader=more.pop("reader", _READER), doc=doc, logger=_LOGGER, **more)


DATABASE_URL = _var("OFSRE_DATABASE_URL", TEXT, "", reader="all services but the gateway, queue, runtime",
                    shown="`sqlite+aiosqlite:///$OFSRE_DATA_DIR/ofsre.db`",
                    doc="SQLAlchemy async URL, e.g. `postgresql+asyncpg://postgres@127.0.0.1:5432/test` "
                        "(the queue's `db` backend too)")
QUEUE_BACKEND = _var("OFSRE_QUEUE_BACKEND", TEXT, "db", reader="payments, worker, queue, runtime",
                     doc="`db`, `sqs`, `kafka` or `pubsub` (another name stops the start)")
# field of QueueConfig -> its variable (resolve() reads them in this order)
_VARS: dict[str, Var[Any]] = {
    "backend": QUEUE_BACKEND,
    "service": SERVICE,
    "max_attempts": _var("OFSRE_QUEUE_MAX_ATTEMPTS", integer(1), 5, "deliveries before dead-lettering"),
    "lease_seconds": _var("OFSRE_QUEUE_LEASE_SECONDS", duration(0.001), 30.0,
                          "lease / visibility timeout / ack deadline of a delivery"),
    "retry_delay_seconds": _var("OFSRE_QUEUE_RETRY_DELAY_SECONDS", duration(), 0.0,
                                "wait before a nacked message is due again (not Kafka)"),
    "batch_size": _var("OFSRE_QUEUE_BATCH_SIZE", integer(1), 1,
                       "messages claimed per fetch (unused ones go back on close)"),
    "poll_min_seconds": _var("OFSRE_QUEUE_POLL_MIN_SECONDS", duration(0.001), 0.05,
                             "first wait after an empty fetch (doubles up to "
                             "`OFSRE_QUEUE_POLL_MAX_SECONDS`)"),
    "poll_max_seconds": _var("OFSRE_QUEUE_POLL_MAX_SECONDS", duration(0.001), 1.0,
                             "longest wait when empty; SQS long-polls `ceil(POLL_MAX)` s (≤ 20: raise it in "
                             "production to save requests)"),
    "auto_create": _var("OFSRE_QUEUE_AUTO_CREATE", BOOLEAN, True,
                        "declare missing queues/topics/subscriptions (SQS, Pub/Sub)"),
    "database_url": DATABASE_URL,
    "data_dir": DATA_DIR,
    "name_prefix": _var("OFSRE_QUEUE_NAME_PREFIX", TEXT, "",
                        "prefix of SQS queue / Kafka / Pub/Sub topic names (one environment per prefix)"),
    "endpoint_url": _var("OFSRE_QUEUE_ENDPOINT_URL", TEXT, None,
                         "`sqs`: SQS and SNS endpoint (moto, LocalStack)", shown="AWS"),
    "region": _var("OFSRE_QUEUE_REGION", TEXT, "sa-east-1", "`sqs`: the AWS region",
                   also=("AWS_REGION", "AWS_DEFAULT_REGION")),
    "sns_topic_arn": _var("OFSRE_QUEUE_SNS_TOPIC_ARN", TEXT, None,
                          "`sqs`: publish through SNS; `{topic}` is substituted",
                          shown="unset (send to SQS directly)"),
    "kafka_bootstrap": _var("OFSRE_QUEUE_KAFKA_BOOTSTRAP", TEXT, "127.0.0.1:9092",
                            "`kafka`: bootstrap servers"),
    "pubsub_project": _var("OFSRE_QUEUE_PUBSUB_PROJECT", TEXT, "", "`pubsub`: GCP project; "
                           "`PUBSUB_EMULATOR_HOST` is honoured", also=("GOOGLE_CLOUD_PROJECT",),
                           shown="required for `pubsub`"),
}


@dataclass(frozen=True)
class QueueConfig:
    """Every knob of the queue; the variable of each field is in ``_VARS`` above."""

    backend: str = QUEUE_BACKEND.default
    service: str = "ofsre"  # the queue's own fallback when OFSRE_SERVICE and OTEL_SERVICE_NAME are unset
    max_attempts: int = _VARS["max_attempts"].default
    lease_seconds: float = _VARS["lease_seconds"].default
    retry_delay_seconds: float = _VARS["retry_delay_seconds"].default
    batch_size: int = _VARS["batch_size"].default
    poll_min_seconds: float = _VARS["poll_min_seconds"].default
    poll_max_seconds: float = _VARS["poll_max_seconds"].default
    auto_create: bool = _VARS["auto_create"].default
    database_url: str = DATABASE_URL.default
    data_dir: Path = DATA_DIR.default
    name_prefix: str = _VARS["name_prefix"].default
    endpoint_url: str | None = _VARS["endpoint_url"].default
    region: str = _VARS["region"].default
    sns_topic_arn: str | None = _VARS["sns_topic_arn"].default
    kafka_bootstrap: str = _VARS["kafka_bootstrap"].default
    pubsub_project: str = _VARS["pubsub_project"].default

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown queue backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.max_attempts < 1 or self.batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        if (self.lease_seconds <= 0 or self.poll_min_seconds <= 0
                or self.poll_max_seconds < self.poll_min_seconds):
            raise ValueError("lease_seconds and poll_min_seconds must be > 0 and poll_max >= poll_min")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{Path(self.data_dir)}/ofsre.db")

    @classmethod
    def resolve(cls, settings: Any = None, environ: Mapping[str, str] | None = None,
                **overrides: Any) -> QueueConfig:
        """Build the config from ``overrides``, then ``settings`` attributes, then the environment."""
        if isinstance(settings, QueueConfig):
            return settings.replace(**overrides) if overrides else settings
        values = _from_env(os.environ if environ is None else environ)
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
    """The fields the environment sets (unset and malformed variables are left out, so defaults apply)."""
    values = {name: var.from_env(env, default=UNSET) for name, var in _VARS.items()}
    return {name: value for name, value in values.items() if value is not UNSET}
