"""The settlement worker over the real database queue: settle, reject, dead-letter, drain on stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import pytest

from ofsre.platform.contracts import PAYMENTS_TOPIC
from ofsre.platform.payments.app import create_app as payments_app
from ofsre.platform.queue import open_queue
from ofsre.platform.worker.app import create_app as worker_app

from ..http_stub import Request, json_reply
from .participant import Participant, pix_body
from .test_payments import BASE, ORG, authorised_consent, drain, post


async def until(check, timeout_s: float = 20.0, every_s: float = 0.05):
    """Poll ``check()`` until it returns something truthy (a bound, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


@pytest.fixture
def initiator(settings) -> Participant:
    return Participant.register("org-pay", settings.data_dir / "jwks")


async def pay(http, me) -> str:
    """A signed Pix payment by the initiator ``me`` (payments v4 is JWS both ways)."""
    http.headers.update(ORG)
    cid = await authorised_consent(http, me)
    paid = await post(http, me, f"{BASE}/pix/payments", pix_body(consent_id=cid), key="w-" + cid)
    assert paid.status_code == 201, paid.text
    http.me = me
    return me.read(paid.text)["data"][0]["paymentId"]


def status_of(http, payment_id):
    async def check():
        return http.me.read((await http.get(f"{BASE}/pix/payments/{payment_id}")).text)["data"]
    return check


async def test_worker_settles_payments_to_acsc(settings, registry, serve, initiator):
    await drain(settings)
    worker_settings = dataclasses.replace(settings, worker_concurrency=2)
    async with (serve(payments_app(settings, registry=registry)) as http,
                serve(worker_app(worker_settings, registry=registry)) as worker):
        payment_ids = [await pay(http, initiator) for _ in range(3)]
        for payment_id in payment_ids:
            async def settled(pid=payment_id):
                data = await status_of(http, pid)()
                return data if data["status"] in ("ACSC", "RJCT") else None
            assert (await until(settled))["status"] == "ACSC"
        ready = await worker.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "queue": True,
                                                                       "consumer": True}


async def test_failure_rate_one_rejects_every_payment(settings, registry, serve, initiator):
    await drain(settings)
    rejecting = dataclasses.replace(settings, settlement_failure_rate=1.0, worker_concurrency=1)
    async with (serve(payments_app(settings, registry=registry)) as http,
                serve(worker_app(rejecting, registry=registry))):
        payment_id = await pay(http, initiator)

        async def rejected():
            data = await status_of(http, payment_id)()
            return data if data["status"] == "RJCT" else None
        data = await until(rejected)
        assert data["rejectionReason"]["code"] == "PAGAMENTO_RECUSADO_SPI"


async def test_poison_messages_are_dead_lettered(settings, registry, serve):
    await drain(settings)
    marker = uuid.uuid4().hex
    queue = await open_queue(settings, registry=None)
    try:
        await queue.publish(PAYMENTS_TOPIC, {"marker": marker})
        await queue.publish(PAYMENTS_TOPIC, {"paymentId": f"missing-{marker}"})
        async with serve(worker_app(dataclasses.replace(settings, worker_concurrency=1), registry=registry)):
            async def both_dead():
                reasons = {str(d.body): d.reason for d in await queue.dead_letters(PAYMENTS_TOPIC, limit=1000)
                           if marker in str(d.body)}
                return reasons if len(reasons) == 2 else None
            reasons = await until(both_dead)
    finally:
        await queue.close()
    assert sorted(reasons.values()) == ["malformed: no paymentId", "unknown payment"]


async def test_settling_twice_changes_nothing(settings, registry, serve, initiator):
    await drain(settings)
    app = worker_app(dataclasses.replace(settings, worker_concurrency=1), registry=registry)
    async with serve(payments_app(settings, registry=registry)) as http:
        payment_id = await pay(http, initiator)
        await drain(settings)  # take the message away: this test drives the settler by hand
        async with serve(app):
            assert await app.state.settler.settle(payment_id) == "ACSC"
            first = await status_of(http, payment_id)()
            assert await app.state.settler.settle(payment_id) == "ACSC"
            assert await status_of(http, payment_id)() == first
            assert await app.state.settler.settle("no-such-payment") is None


async def test_stopping_finishes_the_settlement_in_flight(settings, registry, serve, initiator):
    await drain(settings)
    slow = dataclasses.replace(settings, settlement_latency_ms=1500, worker_concurrency=1)
    async with serve(payments_app(settings, registry=registry)) as http:
        async with serve(worker_app(slow, registry=registry)):
            payment_id = await pay(http, initiator)

            async def accepted():
                return (await status_of(http, payment_id)())["status"] == "ACCP"
            await until(accepted)
        # the worker's lifespan has ended: the settlement it had started was finished, not dropped
        assert (await status_of(http, payment_id)())["status"] == "ACSC"


async def test_the_webhook_is_a_client_span_of_the_workers_tracer_provider(
        settings, registry, serve, initiator, http_stub, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from ofsre.platform.worker.app import ENV_WEBHOOKS

    calls: list[Request] = []

    def webhook(request: Request):
        calls.append(request)
        return json_reply(202, {})

    receiver = http_stub(webhook, methods=("POST",))
    monkeypatch.setenv(ENV_WEBHOOKS, json.dumps({ORG["x-ofsre-client-org-id"]: receiver.url}))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    await drain(settings)
    async with (serve(payments_app(settings, registry=registry)) as http,
                serve(worker_app(settings, registry=registry, tracer_provider=provider))):
        payment_id = await pay(http, initiator)

        async def notified():
            return bool(calls)
        await until(notified)
    # the worker's CLIENT spans: its database calls and the one HTTP call, the webhook
    client = [span for span in spans.get_finished_spans()
              if span.kind is SpanKind.CLIENT and "url.full" in span.attributes]
    assert [span.attributes["http.request.method"] for span in client] == ["POST"]
    assert calls[0].route.endswith(f"/pix/payments/{payment_id}")
    assert calls[0].headers["traceparent"].split("-")[2] == f"{client[0].context.span_id:016x}"
