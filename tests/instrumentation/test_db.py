"""Query metrics, pool gauges and spans on real engines: PostgreSQL (asyncpg, psycopg) and SQLite."""

from unittest import mock

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from ofsre.instrumentation.db import OTHER_OPERATION, instrument_engine, operation_of

PG_ASYNC = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_SYNC = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _queries(registry, operation, db, service="svc"):
    return registry.get_sample_value("ofsre_db_query_duration_seconds_count",
                                     {"service": service, "db": db, "operation": operation}) or 0.0


def _pool(registry, db, in_use: bool, service="svc"):
    name = "ofsre_db_pool_connections_in_use" if in_use else "ofsre_db_pool_connections"
    return registry.get_sample_value(name, {"service": service, "db": db})


# Temporary tables live in one connection: other helpers share the database.
STATEMENTS = [
    "CREATE TEMPORARY TABLE ofsre_pix (id integer primary key, amount numeric)",
    "INSERT INTO ofsre_pix VALUES (1, 10.5), (2, 20)",
    "SELECT amount FROM ofsre_pix WHERE id = 1",
    "  /* leading comment */ select count(*) from ofsre_pix",
    "UPDATE ofsre_pix SET amount = 11 WHERE id = 1",
    "DELETE FROM ofsre_pix WHERE id = 2",
]


def _assert_counts(registry, db):
    assert _queries(registry, "SELECT", db) == 2
    assert _queries(registry, "INSERT", db) == 1
    assert _queries(registry, "UPDATE", db) == 1
    assert _queries(registry, "DELETE", db) == 1
    assert _queries(registry, OTHER_OPERATION, db) >= 1  # CREATE (+ dialect setup queries on first connect)


def test_operation_of_is_bounded():
    assert operation_of("SELECT 1") == "SELECT"
    assert operation_of("\n  insert into t values (1)") == "INSERT"
    assert operation_of("-- why\nDELETE FROM t") == "DELETE"
    assert operation_of("WITH x AS (SELECT 1) SELECT * FROM x") == OTHER_OPERATION
    assert operation_of("VACUUM") == OTHER_OPERATION
    assert operation_of("") == OTHER_OPERATION


async def test_asyncpg_engine_counts_by_operation_and_tracks_the_pool(registry, spans):
    provider, exporter = spans
    engine = instrument_engine(create_async_engine(PG_ASYNC), service="svc", registry=registry,
                               tracer_provider=provider)
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("request") as parent:
            async with engine.connect() as conn:
                assert _pool(registry, "test", in_use=True) == 1
                for statement in STATEMENTS:
                    await conn.execute(text(statement))
        assert _pool(registry, "test", in_use=True) == 0
        assert _pool(registry, "test", in_use=False) == 1
        _assert_counts(registry, "test")

        db_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
        update = next(s for s in db_spans if s.attributes["db.operation.name"] == "UPDATE")
        assert update.name == "UPDATE test"
        assert update.attributes["db.system"] == "postgresql"
        assert update.attributes["db.namespace"] == "test"
        assert update.parent.span_id == parent.get_span_context().span_id  # context crosses the greenlet
        assert not any("ofsre_pix" in str(v) for s in db_spans for v in s.attributes.values())
    finally:
        await engine.dispose()
    assert _pool(registry, "test", in_use=False) == 0


async def test_failed_statement_ends_its_span_with_an_error(registry, spans):
    provider, exporter = spans
    engine = instrument_engine(create_async_engine(PG_ASYNC), service="svc", registry=registry,
                               tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("request"):
            async with engine.connect() as conn:
                with pytest.raises(ProgrammingError):
                    await conn.execute(text("SELECT * FROM ofsre_no_such_table"))
    finally:
        await engine.dispose()
    [failed] = [s for s in exporter.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert failed.attributes["db.operation.name"] == "SELECT"
    assert _queries(registry, "SELECT", "test") >= 1
    assert _pool(registry, "test", in_use=True) == 0


def test_psycopg_sync_engine_and_idempotence(registry):
    engine = create_engine(PG_SYNC, pool_size=2)
    instrument_engine(engine, service="svc", db_name="ledger", registry=registry, spans=False)
    instrument_engine(engine, service="svc", db_name="ledger", registry=registry, spans=False)  # no-op
    try:
        with engine.connect() as first, engine.connect() as second:
            assert _pool(registry, "ledger", in_use=True) == 2
            for statement in STATEMENTS:
                first.execute(text(statement))
            second.execute(text("SELECT 1"))
        assert _pool(registry, "ledger", in_use=True) == 0
        assert _pool(registry, "ledger", in_use=False) == 2
        assert _queries(registry, "SELECT", "ledger") == 3  # counted once, not twice
        assert _queries(registry, "INSERT", "ledger") == 1
    finally:
        engine.dispose()
    assert _pool(registry, "ledger", in_use=False) == 0


def test_sqlite_file_engine_uses_the_file_name_as_db(registry, tmp_path):
    engine = instrument_engine(create_engine(f"sqlite:///{tmp_path}/payments.db"), service="svc",
                               registry=registry)
    try:
        with engine.begin() as conn:
            assert _pool(registry, "payments.db", in_use=True) == 1
            for statement in STATEMENTS:
                conn.execute(text(statement))
        assert _pool(registry, "payments.db", in_use=True) == 0
        _assert_counts(registry, "payments.db")
    finally:
        engine.dispose()


async def test_aiosqlite_memory_engine(registry):
    engine = instrument_engine(create_async_engine("sqlite+aiosqlite://"), service="svc", registry=registry)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await conn.execute(text("SELECT 2"))
        assert _queries(registry, "SELECT", "memory") == 2
        assert _pool(registry, "memory", in_use=True) == 0
    finally:
        await engine.dispose()


def test_engine_instrumented_after_first_use_starts_from_the_pool_state(registry):
    engine = create_engine(PG_SYNC, pool_size=2)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            instrument_engine(engine, service="svc", registry=registry, spans=False)
            assert _pool(registry, "test", in_use=True) == 1
        assert _pool(registry, "test", in_use=True) == 0
        assert _pool(registry, "test", in_use=False) == 1
    finally:
        engine.dispose()


def test_statements_outside_a_span_start_no_trace(registry, spans):
    """A queue poll or a migration must not start a new root trace per statement."""
    provider, exporter = spans
    engine = instrument_engine(create_engine("sqlite://"), service="svc", registry=registry,
                               tracer_provider=provider)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert exporter.get_finished_spans() == ()
    assert _queries(registry, "SELECT", "memory") == 1


def test_a_failing_tracer_never_fails_a_query(registry, spans):
    provider = mock.Mock()
    provider.get_tracer.return_value.start_span.side_effect = RuntimeError("tracer down")
    engine = instrument_engine(create_engine("sqlite://"), service="svc", registry=registry,
                               tracer_provider=provider)
    try:
        with spans[0].get_tracer("test").start_as_current_span("request"), engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    finally:
        engine.dispose()
    assert registry.get_sample_value("ofsre_telemetry_errors_total", {"component": "db"}) >= 1
    assert _queries(registry, "SELECT", "memory") == 1  # still timed without its span
    assert _pool(registry, "memory", in_use=True) == 0
