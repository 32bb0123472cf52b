"""The database-backed queue (the default): SQLAlchemy 2 async on PostgreSQL or SQLite.

Two tables, created by :func:`create_schema` (the platform's ``migrate`` step calls it):

* ``ofsre_queue_messages`` — messages waiting or leased. A consumer claims rows with one
  statement, ``UPDATE … SET lease_token = :new, available_at = now + lease, attempts = attempts + 1
  WHERE id IN (SELECT id … WHERE available_at <= now ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED)
  RETURNING …``. On PostgreSQL ``SKIP LOCKED`` lets many processes claim concurrently without
  waiting on each other; SQLite (≥ 3.35 for ``RETURNING``) takes the database write lock for
  the whole statement, so processes sharing the file never claim the same row either.
  ``ack`` deletes the row; ``nack`` clears the lease; a consumer that dies simply lets its lease
  expire and the row is claimed again with ``attempts`` + 1.
* ``ofsre_queue_dead_letters`` — messages given up on, with the reason.

Every write that settles a message checks the lease token, so a consumer whose lease
expired (and whose message went to someone else) cannot ack or dead-letter it any more.
Times come from the database clock, not the processes' clocks.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ._config import QueueConfig
from ._core import DeadLetter, Message, Queue, check_topic

__all__ = ["DatabaseQueue", "create_schema", "metadata", "messages", "dead_letters"]

_log = logging.getLogger("ofsre.platform.queue")

metadata = MetaData()
_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

messages = Table(
    "ofsre_queue_messages", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("topic", String(64), nullable=False),
    Column("msg_key", String(255)),
    Column("body", Text, nullable=False),
    Column("headers", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # deliveries so far
    Column("available_at", Double, nullable=False),            # epoch seconds: claimable from then on
    Column("lease_token", String(36)),                          # set while a consumer holds it
    Column("created_at", Double, nullable=False),
    sqlite_autoincrement=True,  # ids never reused, even after the table empties
)
Index("ix_ofsre_queue_messages_claim", messages.c.topic, messages.c.available_at, messages.c.id)

dead_letters = Table(
    "ofsre_queue_dead_letters", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger, nullable=False),
    Column("topic", String(64), nullable=False),
    Column("msg_key", String(255)),
    Column("body", Text, nullable=False),
    Column("headers", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("dead_lettered_at", Double, nullable=False),
)
Index("ix_ofsre_queue_dead_letters_topic", dead_letters.c.topic, dead_letters.c.id)

# Serialises concurrent create_schema() calls on PostgreSQL (two migrations starting at once).
_SCHEMA_LOCK_KEY = 0x0F5E_0001


def _now(dialect: str):
    """The database's clock as epoch seconds (float), so every process agrees on lease expiry."""
    if dialect == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - literal(2440587.5)) * literal(86400.0)


def make_engine(url: str) -> AsyncEngine:
    """An engine for the queue alone. SQLite: WAL and a busy timeout so processes can share the file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_size=5, max_overflow=5, pool_recycle=1800)
    if sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError("the db queue needs SQLite >= 3.35 (UPDATE … RETURNING); found "
                           f"{sqlite3.sqlite_version}")
    if not parsed.database or parsed.database == ":memory:":
        engine = create_async_engine(parsed, poolclass=StaticPool)  # one connection: one in-memory database
    else:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


async def create_schema(url_or_engine: str | AsyncEngine) -> None:
    """Create the queue's tables if missing (idempotent; safe when two processes migrate at once)."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            await conn.run_sync(metadata.create_all)
    finally:
        if engine is not url_or_engine:
            await engine.dispose()


class DatabaseQueue(Queue):
    """The ``db`` backend. ``group`` is recorded nowhere: every consumer of a topic competes for
    its messages (one delivery per message, whatever the group)."""

    backend = "db"

    def __init__(self, config: QueueConfig, *, engine: AsyncEngine | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else make_engine(config.database_url)
        if self._owns_engine:
            self._instrument()
        self._dialect = self.engine.dialect.name
        self._now = _now(self._dialect)

    def _instrument(self) -> None:
        from ofsre.instrumentation.db import instrument_engine

        # Metrics only: a span per poll would bury the traces that matter under empty fetches.
        instrument_engine(self.engine, service=self.config.service, registry=self._registry,
                          tracer_provider=self._tracer_provider, spans=False)

    async def _send(self, topic: str, payload: str, key: str | None, headers: dict[str, str]) -> str:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(messages).values(topic=topic, msg_key=key, body=payload, headers=json.dumps(headers),
                                        attempts=0, available_at=self._now, created_at=self._now)
                .returning(messages.c.id))
            return str(result.scalar_one())

    async def _fetch(self, topic: str, group: str, max_messages: int, wait_seconds: float) -> list[Message]:
        token = str(uuid.uuid4())
        claimable = (select(messages.c.id)
                     .where(messages.c.topic == topic, messages.c.available_at <= self._now)
                     .order_by(messages.c.id).limit(max_messages)
                     .with_for_update(skip_locked=True))  # rendered on PostgreSQL, dropped on SQLite
        claim = (update(messages).where(messages.c.id.in_(claimable))
                 .values(attempts=messages.c.attempts + 1, lease_token=token,
                         available_at=self._now + self.config.lease_seconds)
                 .returning(messages.c.id, messages.c.body, messages.c.headers, messages.c.attempts))
        async with self.engine.begin() as conn:
            claimed = (await conn.execute(claim)).all()
        rows = sorted(claimed, key=lambda row: row.id)  # RETURNING order is unspecified
        return [Message(self, topic, group, id=str(row.id), raw_body=row.body,
                        headers=json.loads(row.headers), attempt=row.attempts, receipt=token)
                for row in rows]

    def _mine(self, message: Message):
        return (messages.c.id == int(message.id)) & (messages.c.lease_token == message.receipt)

    async def _write(self, message: Message, statement, what: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        if result.rowcount == 0:
            _log.warning("%s of %r ignored: its lease expired and it was claimed again", what, message)
        return result.rowcount > 0

    async def _ack(self, message: Message) -> None:
        await self._write(message, delete(messages).where(self._mine(message)), "ack")

    async def _retry(self, message: Message, delay_seconds: float) -> None:
        await self._write(message, update(messages).where(self._mine(message))
                           .values(lease_token=None, available_at=self._now + delay_seconds), "nack")

    async def _release(self, claimed: Sequence[Message]) -> None:
        # Never handed to a consumer: give the attempt back too.
        async with self.engine.begin() as conn:
            for message in claimed:
                await conn.execute(update(messages).where(self._mine(message))
                                   .values(lease_token=None, available_at=self._now,
                                           attempts=messages.c.attempts - 1))

    async def _dead_letter(self, message: Message, reason: str) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(delete(messages).where(self._mine(message))
                                      .returning(*messages.c))).first()
            if row is None:
                _log.warning("dead letter of %r ignored: its lease expired and it was claimed again", message)
                return
            await self._insert_dead_letter(conn, row, reason)

    async def _insert_dead_letter(self, conn: AsyncConnection, row: Any, reason: str) -> None:
        await conn.execute(insert(dead_letters).values(
            message_id=row.id, topic=row.topic, msg_key=row.msg_key, body=row.body, headers=row.headers,
            attempts=row.attempts, reason=reason, created_at=row.created_at, dead_lettered_at=self._now))

    async def _ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(func.count()).select_from(messages).where(literal(False)))
            return True
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            _log.warning("queue database ping failed: %s", exc)
            return False

    async def depth(self, topic: str, group: str = "worker") -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(messages).where(messages.c.topic == check_topic(topic))
            return int((await conn.execute(query)).scalar_one())

    async def dead_letters(self, topic: str, limit: int = 100) -> list[DeadLetter]:
        query = (select(dead_letters).where(dead_letters.c.topic == check_topic(topic))
                 .order_by(dead_letters.c.id).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [DeadLetter(id=str(row.message_id), topic=row.topic, body=_json_or_text(row.body),
                           headers=json.loads(row.headers), attempt=row.attempts, reason=row.reason)
                for row in rows]

    async def _close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
