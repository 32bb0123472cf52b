"""The service kit every service is built on: service_app's telemetry, its shutdown, db.transition."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ofsre.instrumentation import semconv
from ofsre.platform import app_common, db
from ofsre.platform.app_common import service_app
from ofsre.platform.contracts import AUTHORISED, AWAITING, REJECTED
from ofsre.platform.errors import OFError
from ofsre.platform.models import Consent, utcnow
from ofsre.platform.queue import Message, Queue, QueueConfig
from ofsre.platform.settings import Settings


class _StuckQueue(Queue):
    """A queue holding one message that is never settled, so ``close()`` drains for its whole timeout."""

    backend = "stuck"

    def __init__(self) -> None:
        super().__init__(QueueConfig(), registry=None)
        self.message = Message(self, "pix-payments", "worker", id="1", raw_body="{}", headers={}, attempt=1)
        self._in_flight.add(self.message)
        self.released = False

    async def _close(self) -> None:
        self.released = True

    async def _ping(self) -> bool:
        return True

    async def depth(self, topic, group="worker"):
        return 1

    async def dead_letters(self, topic, limit=100):
        return []

    async def _send(self, topic, payload, key, headers):
        raise AssertionError("the close test never publishes")

    async def _fetch(self, topic, group, max_messages, wait_seconds):
        return []

    async def _ack(self, message): ...

    async def _retry(self, message, delay_seconds): ...

    async def _dead_letter(self, message, reason): ...

    async def _release(self, messages): ...


def _kit_app(registry, tracer_provider, **kwargs):
    router = APIRouter()

    @router.get("/things/{thing}")
    async def thing(thing: str) -> dict:
        return {"thing": thing}

    return service_app("kit", Settings(), title="kit", database=False, routers=[router], registry=registry,
                       tracer_provider=tracer_provider, **kwargs)


async def test_registry_and_tracer_provider_reach_the_instrumentation(registry, serve):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    async with serve(_kit_app(registry, provider)) as http:
        assert (await http.get("/things/1")).json() == {"thing": "1"}
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, {
        "service": "kit", "route": "/things/{thing}", "method": "GET", "status": "200", "api": "",
        "tier": ""}) == 1
    assert [s.name for s in spans.get_finished_spans()] == ["GET /things/{thing}"]


async def test_shutdown_gives_the_queue_its_drain_and_then_releases_it(registry, serve, monkeypatch):
    # Queue.close(timeout) drains for up to `timeout`, then releases the connections. The outer bound
    # must exceed the drain: when both were 10 s, the outer wait cancelled the close before it released.
    monkeypatch.setattr(app_common, "_QUEUE_DRAIN_TIMEOUT_S", 0.3)
    monkeypatch.setattr(app_common, "_QUEUE_RELEASE_TIMEOUT_S", 5.0)
    queue = _StuckQueue()

    async def start(app) -> None:
        app.state.queue = queue

    loop = asyncio.get_running_loop()
    async with serve(_kit_app(registry, TracerProvider(), on_startup=start)):
        stopping = loop.time()
    took = loop.time() - stopping
    assert queue.closed and queue.released
    assert 0.3 <= took < 5.0  # the drain's own timeout ended it, not the outer bound


async def _consent(settings, status: str, **fields) -> tuple[str, object]:
    engine = db.create_engine(settings, service="test", registry=None)
    consent_id = f"urn:ofsre:{uuid.uuid4()}"
    async with db.session_factory(engine)() as session:
        session.add(Consent(consent_id=consent_id, status=status, permissions=["ACCOUNTS_READ"],
                            document="12345678901", document_rel="CPF", **fields))
        await session.commit()
    return consent_id, engine


async def test_transition_moves_only_from_the_expected_status(settings):
    consent_id, engine = await _consent(settings, AWAITING)
    sessions = db.session_factory(engine)
    try:
        async with sessions() as first, sessions() as second:
            assert await db.transition(first, Consent, consent_id, AWAITING, AUTHORISED)
            assert not await db.transition(second, Consent, consent_id, AWAITING, REJECTED,
                                           rejected_by="USER")
            assert not await db.transition(second, Consent, "urn:ofsre:nobody", AWAITING, REJECTED)
        async with sessions() as session:
            consent = await session.get(Consent, consent_id)
            assert (consent.status, consent.rejected_by) == (AUTHORISED, None)
    finally:
        await engine.dispose()


async def test_transition_sets_the_values_and_without_commit_leaves_it_to_the_caller(settings):
    consent_id, engine = await _consent(settings, AUTHORISED)
    sessions = db.session_factory(engine)
    at = utcnow().replace(microsecond=0)
    try:
        async with sessions() as session:
            assert await db.transition(session, Consent, consent_id, AUTHORISED, REJECTED, at=at,
                                       commit=False,
                                       rejected_by="USER", rejection_reason="CUSTOMER_MANUALLY_REVOKED")
            await session.rollback()  # the caller's other write failed: nothing happened
        async with sessions() as session:
            assert (await session.get(Consent, consent_id)).status == AUTHORISED
            assert await db.transition(session, Consent, consent_id, AUTHORISED, REJECTED, at=at,
                                       rejected_by="USER", rejection_reason="CUSTOMER_MANUALLY_REVOKED")
        async with sessions() as session:
            consent = await session.get(Consent, consent_id)
            assert (consent.status, consent.rejected_by, consent.rejection_reason) == (
                REJECTED, "USER", "CUSTOMER_MANUALLY_REVOKED")
            assert consent.status_updated_at == at
    finally:
        await engine.dispose()


async def test_owned_is_the_callers_row_else_404_or_403(settings):
    consent_id, engine = await _consent(settings, AWAITING, client_org_id="org-a")
    try:
        async with db.session_factory(engine)() as session:
            own = await app_common.owned(session, Consent, consent_id, "org-a", "consent")
            assert own.status == AWAITING
            with pytest.raises(OFError) as other:
                await app_common.owned(session, Consent, consent_id, "org-b", "consent")
            with pytest.raises(OFError) as missing:
                await app_common.owned(session, Consent, "urn:ofsre:nobody", "org-a", "consent", status=422,
                                       code="CONSENTIMENTO_INVALIDO")
        assert (other.value.status, other.value.detail) == (403, "consent belongs to another institution")
        assert (missing.value.status, missing.value.code, missing.value.detail) == (
            422, "CONSENTIMENTO_INVALIDO", "consent urn:ofsre:nobody not found")
    finally:
        await engine.dispose()


async def test_decide_awaiting_moves_an_awaiting_consent_once(settings):
    consent_id, engine = await _consent(settings, AWAITING)
    sessions = db.session_factory(engine)
    try:
        async with sessions() as session:
            decided = await app_common.decide_awaiting(session, Consent, consent_id, AWAITING, REJECTED,
                                                       "consent", rejected_by="USER")
            assert (decided.status, decided.rejected_by) == (REJECTED, "USER")
        async with sessions() as session:  # a second answer read the consent before the first one moved it
            with pytest.raises(OFError) as late:
                await app_common.decide_awaiting(session, Consent, consent_id, AWAITING, AUTHORISED,
                                                 "consent")
            with pytest.raises(OFError) as settled:
                await app_common.decide_awaiting(session, Consent, consent_id, REJECTED, AUTHORISED,
                                                 "consent")
        assert late.value.status == 409
        assert (settled.value.status, settled.value.code) == (422, "STATUS_INVALIDO")
        async with sessions() as session:
            assert (await session.get(Consent, consent_id)).status == REJECTED
    finally:
        await engine.dispose()
