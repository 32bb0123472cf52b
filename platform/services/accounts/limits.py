"""Monthly operational limits (HTTP 423): successful calls per consent, endpoint, resource and month.

Open Finance Brasil caps how often a receiver may call each customer-data endpoint for the
same resource and customer in a calendar month (CF-17989722; openfinance.md §3). The limit is
the endpoint's tier ``monthly_limit`` in the catalog (baixa 8, média 30, média-alta 120,
alta 420); endpoints without a TPM limit (consents, resources, payments) have none either.
What counts, as the rule says:

* only successful calls (the endpoint computed its answer before it is counted);
* a call that pages on with ``pagination-key`` does not count;
* the key is the consent (one customer, one receiver), the endpoint's route template, the
  resource (the ``accountId``; ``-`` for a list) and the UTC month.

The count lives in the shared database (``operational_usage``), so every replica enforces the
same limit. :func:`consume` is one conditional ``UPDATE … WHERE calls < limit`` (an ``INSERT``
for the month's first call): two concurrent calls can never both take the last unit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ofsre.instrumentation.catalog import Catalog, Endpoint

from ..errors import OFError
from ..models import OperationalUsage, utcnow

__all__ = ["monthly_limit", "consume", "LOCKED_CODE"]

LOCKED_CODE = "LIMITE_MENSAL_EXCEDIDO"  # accounts 2.4.2 leaves the 423 code free; named as the rule is


def monthly_limit(entry: Endpoint | None) -> int | None:
    """The endpoint's monthly operational limit, or None when it has none."""
    if entry is None or entry.tpm is None or entry.tier.monthly_limit <= 0:
        return None
    return entry.tier.monthly_limit


async def consume(session: AsyncSession, catalog: Catalog, *, method: str, route: str, consent_id: str,
                  resource_id: str | None, paging: bool, now: datetime | None = None) -> None:
    """Count one successful call; 423 (and nothing counted) when the month's limit is already used."""
    limit = monthly_limit(catalog.lookup(method, route))
    if limit is None or paging:
        return
    month = (now or utcnow()).strftime("%Y-%m")
    key = dict(consent_id=consent_id, endpoint=f"{method} {route}", resource_id=resource_id or "-", month=month)
    for _ in range(2):  # a lost race on the month's first insert is retried as an update
        taken = await session.execute(
            update(OperationalUsage).where(*(getattr(OperationalUsage, k) == v for k, v in key.items()),
                                           OperationalUsage.calls < limit)
            .values(calls=OperationalUsage.calls + 1))
        if taken.rowcount == 1:
            await session.commit()
            return
        if await session.get(OperationalUsage, tuple(key[k] for k in ("consent_id", "endpoint", "resource_id",
                                                                          "month"))) is not None:
            await session.rollback()
            raise OFError(_status(catalog), f"the monthly operational limit of {limit} calls to {route} for this consent "
                               f"and resource is used up for {month}", code=LOCKED_CODE,
                          title="Limite mensal excedido")
        session.add(OperationalUsage(**key, calls=1))
        try:
            await session.commit()
            return
        except IntegrityError:
            await session.rollback()
    raise OFError(_status(catalog), f"the monthly operational limit of {limit} calls to {route} is used up",
                  code=LOCKED_CODE)


def _status(catalog: Catalog) -> int:
    """The catalog's ``operational_limit_status`` (423), as the gateway reads its TPM and capacity codes."""
    return int(catalog.ecosystem["operational_limit_status"])
