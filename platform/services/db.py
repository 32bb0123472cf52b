"""Database access for the services: one instrumented async engine per process.

::

    from ofsre.platform import db

    engine = db.create_engine(settings, service="accounts")    # metrics + spans per statement
    sessions = db.session_factory(engine)
    async with sessions() as session:
        consent = await session.get(Consent, consent_id)
    moved = await db.transition(session, Consent, consent_id, AWAITING, AUTHORISED)  # False: lost a race
    await db.ping(engine)                                      # readiness
    await db.create_schema(engine)                             # only from `run migrate`

PostgreSQL (asyncpg) in production and tests, SQLite (aiosqlite) for a laptop: the SQLite
file lives in ``OFSRE_DATA_DIR`` and is opened in WAL mode with a busy timeout, so several
service processes can share it, and ``synchronous=NORMAL`` (SQLite's advice for WAL: a commit
survives a crash of the process, only the last ones may be lost on power loss; no fsync per commit).

Every status change of a stored resource (consents, payment consents, Pix payments) goes
through :func:`transition`, a conditional ``UPDATE … WHERE status = <expected>``: of two
concurrent transitions from one status only one wins, and a redelivered message resumes
where the last attempt stopped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, cast

from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import event, inspect, text, update
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ofsre.instrumentation.db import instrument_engine

from .models import Base, utcnow
from .settings import Settings

__all__ = ["create_engine", "session_factory", "create_schema", "ping", "transition"]

_log = logging.getLogger("ofsre.platform.db")
_PING_TIMEOUT_S = 2.0


def create_engine(settings: Settings, *, service: str, registry: CollectorRegistry | None = REGISTRY,
                  tracer_provider: TracerProvider | None = None) -> AsyncEngine:
    """The process's engine for ``settings.database_url``, instrumented as ``service`` (metrics in
    ``registry``, spans from ``tracer_provider``, default the global one)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        # No pre-ping: it would cost a round trip per checkout on the hot path.
        engine = create_async_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size,
                                     pool_recycle=1800, pool_timeout=10)
    return instrument_engine(engine, service=service, registry=registry, tracer_provider=tracer_provider)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: endpoints read attributes after committing, without a reload.
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the services' tables (idempotent: existing tables are left alone)."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


async def ping(engine: AsyncEngine) -> bool:
    """True when a ``SELECT 1`` answers within two seconds."""
    try:
        async with asyncio.timeout(_PING_TIMEOUT_S):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        _log.warning("database ping failed: %s", exc)
        return False


async def transition(session: AsyncSession, model: type[Base], key: Any, expected: str, target: str, *,
                     at: datetime | None = None, commit: bool = True, **values: Any) -> bool:
    """Move the ``model`` row whose primary key is ``key`` from status ``expected`` to ``target``.

    One conditional ``UPDATE … SET status = target, status_updated_at = at (default now), **values
    WHERE <key> AND status = expected``; True when it moved the row, False when the row was not
    in ``expected`` (another transition won, or there is no such row). With ``commit`` (the
    default) the change is committed, and a transition that did not happen is rolled back;
    ``commit=False`` leaves both to the caller, for a transition that must commit with other
    writes or not at all (a payment consent is consumed with the payment it pays)::

        if not await transition(session, Consent, consent_id, AWAITING, REJECTED, rejected_by="USER"):
            raise OFError(409, "the consent changed status meanwhile; read it again")
    """
    mapper = inspect(model)
    [key_column] = mapper.primary_key
    result = await session.execute(
        update(model).where(key_column == key, mapper.columns["status"] == expected)
        .values(status=target, status_updated_at=at or utcnow(), **values))
    moved = cast("CursorResult[Any]", result).rowcount == 1  # an UPDATE's result is a cursor's
    if commit:
        await (session.commit() if moved else session.rollback())
    return moved
