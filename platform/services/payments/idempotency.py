"""``x-idempotency-key``: the first answer to a key is the answer to every repeat of it.

::

    outcome = await run_once(session, scope="org-1|pix-payments", key=key, request_body=raw,
                             operation=create_payment)

``operation(session)`` adds its rows to the session (without committing) and returns an
:class:`Outcome`; an :class:`~ofsre.platform.errors.OFError` 422 it raises is a business
answer and is remembered too. The rows and the idempotency record commit in one
transaction, so a key is never recorded for work that did not happen. A repeat with the
same body gets the stored status and bytes; with another body, 422 ``ERRO_IDEMPOTENCIA``.
Two concurrent first requests race on the record's primary key: the loser rolls back and
answers what the winner stored. ``Outcome.after_commit`` (the queue publish) runs only for
the request that did the work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ofsre.instrumentation.openfinance import error_document

from ..errors import OFError
from ..models import IdempotencyRecord

__all__ = ["Outcome", "run_once"]


@dataclass
class Outcome:
    status: int
    body: dict
    after_commit: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Stored:
    """What the client receives: the status and the exact bytes first sent for the key."""

    status: int
    content: str
    replayed: bool


def _replay(record: IdempotencyRecord, request_hash: str) -> Stored:
    if record.request_hash != request_hash:
        raise OFError(422, "this x-idempotency-key was used with another request body",
                      code="ERRO_IDEMPOTENCIA")
    return Stored(record.status_code, record.response, replayed=True)


async def run_once(session: AsyncSession, *, scope: str, key: str, request_body: bytes,
                   operation: Callable[[AsyncSession], Awaitable[Outcome]]) -> Stored:
    request_hash = hashlib.sha256(request_body).hexdigest()
    existing = await session.get(IdempotencyRecord, (scope, key))
    if existing is not None:
        return _replay(existing, request_hash)
    try:
        outcome = await operation(session)
    except OFError as err:
        if err.status != 422:
            raise  # malformed or unauthorised requests are not answers to remember
        await session.rollback()
        outcome = Outcome(err.status, error_document(err.code, err.title, err.detail))
    content = json.dumps(outcome.body, separators=(",", ":"))
    session.add(IdempotencyRecord(scope=scope, key=key, request_hash=request_hash,
                                  status_code=outcome.status, response=content))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        winner = await session.get(IdempotencyRecord, (scope, key), populate_existing=True)
        if winner is None:
            raise
        return _replay(winner, request_hash)
    if outcome.after_commit is not None:
        await outcome.after_commit()
    return Stored(outcome.status, content, replayed=False)
