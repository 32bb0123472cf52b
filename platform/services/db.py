"""Database access for the services: one instrumented async engine per process.

::

    from ofsre.platform import db

    engine = db.create_engine(settings, service="accounts")    # metrics + spans per statement
    sessions = db.session_factory(engine)
    async with sessions() as session:
        consent = await session.get(Consent, consent_id)
    await db.ping(engine)                                      # readiness
    await db.create_schema(engine)                             # only from `run migrate`

PostgreSQL (asyncpg) in production and tests, SQLite (aiosqlite) for a laptop: the SQLite
file lives in ``OFSRE_DATA_DIR`` and is opened in WAL mode with a busy timeout, so several
service processes can share it.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ofsre.instrumentation.db import instrument_engine

from .models import Base
from .settings import Settings

__all__ = ["create_engine", "session_factory", "create_schema", "ping"]

_log = logging.getLogger("ofsre.platform.db")
_PING_TIMEOUT_S = 2.0


def create_engine(settings: Settings, *, service: str) -> AsyncEngine:
    """The process's engine for ``settings.database_url``, instrumented as ``service``."""
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
    return instrument_engine(engine, service=service)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
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
