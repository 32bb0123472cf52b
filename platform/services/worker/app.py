"""The settlement worker: consumes "pix-payments" and settles each Pix payment.

For every message ``{"paymentId": …}`` the worker moves the payment

    RCVD → ACCP (accepted for settlement) → ACSC (settled)  or  → RJCT (rejected by the simulated SPI)

waiting ``OFSRE_SETTLEMENT_LATENCY_MS`` between ACCP and the outcome and rejecting a
fraction ``OFSRE_SETTLEMENT_FAILURE_RATE`` of payments. Each status change is a conditional
``UPDATE … WHERE status = <expected>``, so a redelivered message (at-least-once delivery)
resumes where the last attempt stopped and a settled payment is never settled twice.

Poison messages are dead-lettered at once: a body without a ``paymentId`` string
("malformed") or naming a payment that does not exist ("unknown payment"; payments commit
before they publish, so this is not a race). A database failure nacks the message: it comes
back later and is dead-lettered by the queue after its maximum attempts.

``OFSRE_WORKER_CONCURRENCY`` consumer loops run side by side, each settling one message at a
time inside its CONSUMER span, so the settlement's own spans join the payment's trace
(gateway → payments → queue → worker). It is also an HTTP app: ``/healthz``, ``/readyz``
(database, queue, consumer loops running) and ``/metrics``. On shutdown the loops stop taking
messages, in-flight settlements finish (up to ``OFSRE_SHUTDOWN_TIMEOUT_S``), then the queue closes.
"""

from __future__ import annotations

import asyncio
import logging
import random

from fastapi import FastAPI
from sqlalchemy import update

from ..app_common import service_app
from ..models import PixPayment, utcnow
from ..payments.app import TOPIC
from ..settings import Settings

__all__ = ["create_app", "Settler", "GROUP"]

_log = logging.getLogger("ofsre.platform.worker")

GROUP = "worker"
_RESTART_DELAY_S = 1.0
SETTLED = ("ACSC", "RJCT")


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
            _log.warning("stopping with %d settlements still running; their messages will be redelivered", self.busy)
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
        async with queue.subscribe(TOPIC, group=GROUP) as messages:
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

    async def settle(self, payment_id: str) -> str | None:
        """Settle one payment; its final status, or None when there is no such payment."""
        sessions = self.app.state.sessions
        async with sessions() as session:
            payment = await session.get(PixPayment, payment_id)
            if payment is None:
                return None
            if payment.status in SETTLED:
                return payment.status  # a redelivery of a finished settlement
            if payment.status == "RCVD":
                await self._move(session, payment_id, "RCVD", "ACCP")
        await asyncio.sleep(self.settings.settlement_latency_ms / 1000)
        rejected = self.rng.random() < self.settings.settlement_failure_rate
        final = "RJCT" if rejected else "ACSC"
        reason = {"code": "PAGAMENTO_RECUSADO_SPI", "detail": "simulated settlement failure"} if rejected else None
        async with sessions() as session:
            if not await self._move(session, payment_id, "ACCP", final, rejection_reason=reason):
                current = await session.get(PixPayment, payment_id)
                return current.status if current is not None else None  # another delivery finished it
        return final

    @staticmethod
    async def _move(session, payment_id: str, expected: str, target: str, **values) -> bool:
        result = await session.execute(
            update(PixPayment).where(PixPayment.payment_id == payment_id, PixPayment.status == expected)
            .values(status=target, status_updated_at=utcnow(), **values))
        await session.commit()
        return result.rowcount == 1


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    async def start(app: FastAPI) -> None:
        app.state.settler = Settler(app, settings)
        app.state.settler.start()

    async def stop(app: FastAPI) -> None:
        settler = getattr(app.state, "settler", None)
        if settler is not None:
            await settler.stop()

    async def consuming(app: FastAPI) -> bool:
        return app.state.settler.running()

    return service_app("worker", settings, title="ofsre settlement worker", queue=True, on_startup=start,
                       on_shutdown=stop, readiness={"consumer": consuming},
                       description="Settles Pix payments from the pix-payments queue (no public API)")
