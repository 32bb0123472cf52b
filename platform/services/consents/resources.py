"""resources v3: what a consent gives access to (served by the consents service).

``GET /open-banking/resources/v3/resources`` is the first call a receiving institution makes
after its consent is authorised: it lists the customer's resources the consent covers, each
with its ``resourceId`` (the id the data APIs take), ``type`` and ``status``. The platform's only
data API is accounts, so a consent with an ``ACCOUNTS_*`` permission lists the customer's
seeded accounts (``ACCOUNT``, ``AVAILABLE``); the same ids ``GET /accounts`` returns.

The consent comes from the bearer token (``consent:<consentId>``) as in accounts, and must be
AUTHORISED with ``RESOURCES_READ``: no consent 401, otherwise 403. Pages follow resources 3.1.0:
``page`` from 1, ``page-size`` 25–1000 (the document's minimum is 25).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from ofsre.instrumentation.catalog import load_catalog

from ..accounts import data
from ..accounts.app import paginate, requires
from ..app_common import of_body
from ..errors import ERROR_RESPONSES
from ..models import Consent
from .permissions import Permission

__all__ = ["router", "FAMILY", "BASE", "resources_of"]

FAMILY = load_catalog().family("resources")
BASE = FAMILY.base
_ACCOUNT_PERMISSIONS = frozenset(p.value for p in Permission if p.value.startswith("ACCOUNTS_"))


class Resource(BaseModel):
    resourceId: str
    type: Literal["ACCOUNT"]
    status: Literal["AVAILABLE", "UNAVAILABLE", "TEMPORARILY_UNAVAILABLE", "PENDING_AUTHORISATION"]


ResourceList = of_body(list[Resource], "ResourceList")
router = APIRouter(prefix=BASE, tags=["resources"], responses=ERROR_RESPONSES)
# the same consent check as the data APIs
CanReadResources = Annotated[Consent, Depends(requires(Permission.RESOURCES_READ))]


def resources_of(consent: Consent) -> list[dict]:
    """The resources ``consent`` covers, in a stable order."""
    if not _ACCOUNT_PERMISSIONS.intersection(consent.permissions):
        return []
    return [{"resourceId": a.account_id, "type": "ACCOUNT", "status": "AVAILABLE"}
            for a in data.customer_accounts(consent.document)]


@router.get("/resources", response_model=ResourceList, response_model_exclude_none=True)
async def list_resources(request: Request, response: Response, consent: CanReadResources,
                         page: Annotated[int, Query(ge=1, le=2_147_483_647)] = 1,
                         page_size: Annotated[int, Query(alias="page-size", ge=25, le=1000)] = 25) -> dict:
    response.headers["x-v"] = FAMILY.version
    return paginate(request, resources_of(consent), page, page_size)
