"""The settlement worker: consumes "pix-payments" and settles each Pix payment.

For every message ``{"paymentId": …}`` the worker moves the payment

    RCVD → ACCP (accepted for settlement) → ACSC (settled)  or  → RJCT (rejected by the simulated SPI)

waiting ``OFSRE_SETTLEMENT_LATENCY_MS`` between ACCP and the outcome and rejecting a
fraction ``OFSRE_SETTLEMENT_FAILURE_RATE`` of payments. Each status change is a conditional
``UPDATE … WHERE status = <expected>`` (:func:`ofsre.platform.db.transition`), so a redelivered message
(at-least-once delivery) resumes where the last attempt stopped and a settled payment is never settled twice.

Poison messages are dead-lettered at once: a body without a ``paymentId`` string
("malformed") or naming a payment that does not exist ("unknown payment"; payments commit
before they publish, so this is not a race). A database failure nacks the message: it comes
back later and is dead-lettered by the queue after its maximum attempts.

``OFSRE_WORKER_CONCURRENCY`` consumer loops run side by side, each settling one message at a
time inside its CONSUMER span, so the settlement's own spans join the payment's trace
(gateway → payments → queue → worker). It is also an HTTP app: ``/healthz``, ``/readyz``
(database, queue, consumer loops running) and ``/metrics``. On shutdown the loops stop taking
messages, in-flight settlements finish (up to ``OFSRE_SHUTDOWN_TIMEOUT_S``), then the queue closes.

Webhook notification (a call the platform makes *as a client* of another institution): once a
payment is settled or rejected, the worker tells the initiator that created its consent —
``POST {webhook}/open-banking/webhook/v1/payments/v4/pix/payments/{paymentId}`` with
``{"data": {"timestamp": …}}``, as the Open Finance webhook API defines — when that
organisation has a webhook URI in ``OFSRE_PAYMENT_WEBHOOKS`` (JSON ``{"<organisationId>":
"https://…"}``; in the ecosystem these come from the initiator's software statement). The call
goes through ``instrumented_client(pcm=…)``, so with ``OFSRE_PCM_CAPTURE`` listing ``worker``
it produces the PCM CLIENT report (serverOrgId = the initiator; additionalInfo: consentId,
localInstrument, status, rejectReason). A failed notification is logged and never retried
into the settlement: the payment's status is final either way and the initiator can poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from ofsre.instrumentation.catalog import load_catalog
from ofsre.instrumentation.httpclient import instrumented_client
from ofsre.instrumentation.openfinance import format_datetime
from ofsre.instrumentation.pcm import capture_for

from ..app_common import service_app
from ..contracts import ACCP, ACSC, PAYMENTS_TOPIC, PIX_FINAL, RCVD, RJCT
from ..db import transition
from ..models import PaymentConsent, PixPayment
from ..settings import PAYMENT_WEBHOOKS, Settings

__all__ = ["create_app", "Settler", "Notifier", "GROUP", "WEBHOOK_PATH"]

_log = logging.getLogger("ofsre.platform.worker")

GROUP = "worker"
_RESTART_DELAY_S = 1.0
WEBHOOK_PATH = "/open-banking/webhook/v1/payments/v4/pix/payments/{paymentId}"
ENV_WEBHOOKS = PAYMENT_WEBHOOKS.name


def _webhooks_from_env() -> dict[str, str]:
    """organisationId -> webhook base URL; a malformed value is logged once and means no notifications."""
    return dict(PAYMENT_WEBHOOKS.from_env())


class Notifier:
    """Payment webhooks to the initiators: background tasks, bounded, never failing a settlement."""

    MAX_IN_FLIGHT = 64

    def __init__(self, sessions, webhooks: dict[str, str], registry: CollectorRegistry | None = REGISTRY,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.sessions, self.webhooks = sessions, webhooks
        self.tasks: set[asyncio.Task] = set()
        # The worker's PCM capture (OFSRE_PCM_CAPTURE lists "worker"), else a plain traced client.
        capture = capture_for("worker", None)
        self.client = instrumented_client(pcm=capture or False, registry=registry,
                                          tracer_provider=tracer_provider,
                                          timeout=float(load_catalog().ecosystem["client_timeout_s"]))

    def notify(self, payment_id: str) -> None:
        if not self.webhooks or len(self.tasks) >= self.MAX_IN_FLIGHT:
            return
        task = asyncio.create_task(self._notify(payment_id), name=f"webhook-{payment_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _notify(self, payment_id: str) -> None:
        try:
            async with self.sessions() as session:
                payment = await session.get(PixPayment, payment_id)
                consent = (await session.get(PaymentConsent, payment.consent_id)
                           if payment is not None else None)
            org = consent.client_org_id if consent is not None else None
            base = self.webhooks.get(org or "")
            if base is None:
                return
            info = {"consentId": payment.consent_id, "localInstrument": payment.local_instrument,
                    "status": payment.status}
            if payment.rejection_reason:
                info["rejectReason"] = payment.rejection_reason.get("code")
            url = base + WEBHOOK_PATH.format(paymentId=payment_id)
            response = await self.client.post(
                url, json={"data": {"timestamp": format_datetime()}},
                headers={"x-fapi-interaction-id": str(uuid.uuid4())},
                extensions={"ofsre.pcm": {"serverOrgId": org, "additionalInfo": info}})
            _log.info("payment %s webhook to %s answered %d", payment_id, org, response.status_code,
                      extra={"payment_id": payment_id})
        except Exception as exc:  # noqa: BLE001 - a notification must never disturb the settlement
            _log.warning("payment %s webhook failed: %s", payment_id, exc, extra={"payment_id": payment_id})

    async def close(self, timeout_s: float) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout_s)
        for task in self.tasks:
            task.cancel()
        await self.client.aclose()


class Settler:
    """The consumer loops and the settlement of one payment."""

    def __init__(self, app: FastAPI, settings: Settings, rng: random.Random | None = None) -> None:
        self.app = app
        self.settings = settings
        self.rng = rng or random.Random()
        self.tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(), name=f"settler-{i}")
                      for i in range(self.settings.worker_concurrency)]

    async def stop(self) -> None:
        """Take no more messages, let in-flight settlements finish, then end the loops."""
        self.stopping.set()
        try:
            await asyncio.wait_for(self.idle.wait(), self.settings.shutdown_timeout_s)
        except TimeoutError:
            _log.warning("stopping with %d settlements still running; their messages will be redelivered",
                         self.busy)
        for task in self.tasks:
            task.cancel()  # idle loops are waiting for a message: nothing is lost
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def running(self) -> bool:
        return bool(self.tasks) and not any(t.done() for t in self.tasks)

    async def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep consuming; readiness shows the queue's health
                _log.exception("consumer loop failed; restarting in %.0f s", _RESTART_DELAY_S)
                await asyncio.sleep(_RESTART_DELAY_S)

    async def _consume(self) -> None:
        queue = self.app.state.queue
        async with queue.subscribe(PAYMENTS_TOPIC, group=GROUP) as messages:
            async for message in messages:
                self.busy += 1
                self.idle.clear()
                try:
                    await self.handle(message)
                finally:
                    self.busy -= 1
                    if self.busy == 0:
                        self.idle.set()
                if self.stopping.is_set():
                    return
            if queue.closed:
                self.stopping.set()

    # -- one message ---------------------------------------------------------------------------
    async def handle(self, message) -> None:
        body = message.body
        payment_id = body.get("paymentId") if isinstance(body, dict) else None
        if not isinstance(payment_id, str) or not payment_id:
            _log.warning("dead-lettering a message without paymentId", extra={"message_id": message.id})
            await message.dead_letter("malformed: no paymentId")
            return
        try:
            outcome = await self.settle(payment_id)
        except Exception as exc:  # noqa: BLE001 - the database or the network: try again later
            _log.warning("settling %s failed (attempt %d): %s", payment_id, message.attempt, exc,
                         extra={"payment_id": payment_id})
            await message.nack(requeue=True)
            return
        if outcome is None:
            _log.warning("dead-lettering unknown payment %s", payment_id, extra={"payment_id": payment_id})
            await message.dead_letter("unknown payment")
            return
        _log.info("payment %s %s", payment_id, outcome, extra={"payment_id": payment_id, "status": outcome})
        await message.ack()
        notifier = getattr(self.app.state, "notifier", None)
        if notifier is not None:
            notifier.notify(payment_id)

    async def settle(self, payment_id: str) -> str | None:
        """Settle one payment; its final status, or None when there is no such payment."""
        sessions = self.app.state.sessions
        async with sessions() as session:
            payment = await session.get(PixPayment, payment_id)
            if payment is None:
                return None
            if payment.status in PIX_FINAL:
                return payment.status  # a redelivery of a finished settlement
            if payment.status == RCVD:
                await transition(session, PixPayment, payment_id, RCVD, ACCP)
        await asyncio.sleep(self.settings.settlement_latency_ms / 1000)
        rejected = self.rng.random() < self.settings.settlement_failure_rate
        final = RJCT if rejected else ACSC
        reason = ({"code": "PAGAMENTO_RECUSADO_SPI", "detail": "simulated settlement failure"}
                  if rejected else None)
        async with sessions() as session:
            if not await transition(session, PixPayment, payment_id, ACCP, final, rejection_reason=reason):
                current = await session.get(PixPayment, payment_id)
                return current.status if current is not None else None  # another delivery finished it
        return final


def create_app(settings: Settings | None = None, *, registry: CollectorRegistry | None = None,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The worker app; ``registry`` and ``tracer_provider`` default to the global ones
    (:func:`service_app`)."""
    settings = settings or Settings.from_env()

    async def start(app: FastAPI) -> None:
        app.state.notifier = Notifier(app.state.sessions, _webhooks_from_env(),
                                      registry if registry is not None else REGISTRY, tracer_provider)
        app.state.settler = Settler(app, settings)
        app.state.settler.start()

    async def stop(app: FastAPI) -> None:
        settler = getattr(app.state, "settler", None)
        if settler is not None:
            await settler.stop()
        notifier = getattr(app.state, "notifier", None)
        if notifier is not None:
            await notifier.close(settings.shutdown_timeout_s)

    async def consuming(app: FastAPI) -> bool:
        return app.state.settler.running()

    return service_app("worker", settings, title="ofsre settlement worker", queue=True, on_startup=start,
                       on_shutdown=stop, readiness={"consumer": consuming}, registry=registry,
                       tracer_provider=tracer_provider,
                       description="Settles Pix payments from the pix-payments queue (no public API)")
