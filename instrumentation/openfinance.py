"""Open Finance Brasil wire formats that the instrumentation and the platform share.

Every API of Open Finance Brasil answers an error with one document (openfinance.md §4) and
writes its date-times one way (UTC, to the second, ``Z``)::

    from ofsre.instrumentation.openfinance import error_body, error_document, format_datetime

    format_datetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))   # '2025-01-02T03:04:05Z'
    format_datetime()                                             # now
    error_document("NOT_FOUND", "Not found", "no such consent")
    # {'errors': [{'code': 'NOT_FOUND', 'title': 'Not found', 'detail': 'no such consent'}],
    #  'meta': {'totalRecords': 1, 'totalPages': 1, 'requestDateTime': '…Z'}}
    error_body("NOT_FOUND", "Not found", "no such consent")      # the same, as compact UTF-8 JSON bytes

The middleware answers its own 400 (a required ``x-fapi-interaction-id`` missing) with
:func:`error_body`; the reference platform builds every error response from it too, so there
is one definition of the document. Nothing here imports anything but the standard library.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["DATETIME_FORMAT", "MAX_DETAIL", "error_body", "error_document", "format_datetime"]

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DATETIME_MS_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"
MAX_DETAIL = 2048  # the specifications' maxLength of an error's detail


def format_datetime(value: datetime | None = None, *, milliseconds: bool = False) -> str:
    """``value`` (default: now) in the specifications' date-time format: UTC, seconds, ``Z``.

    A naive ``value`` is taken to be UTC already (SQLite hands stored times back naive).
    ``milliseconds=True`` gives the ``…T03:04:05.000Z`` form some fields require (accounts'
    ``transactionDateTime``); the fraction is always ``.000``, as the platform stores seconds.
    """
    if value is None:
        value = datetime.now(UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    else:
        value = value.astimezone(UTC)
    return value.strftime(_DATETIME_MS_FORMAT if milliseconds else DATETIME_FORMAT)


def error_document(code: str, title: str, detail: str) -> dict[str, Any]:
    """The error document for one error; ``detail`` is cut to the specifications' 2,048 characters."""
    return {"errors": [{"code": code, "title": title, "detail": detail[:MAX_DETAIL]}],
            "meta": {"totalRecords": 1, "totalPages": 1, "requestDateTime": format_datetime()}}


def error_body(code: str, title: str, detail: str) -> bytes:
    """:func:`error_document` encoded as a response body: compact JSON in UTF-8."""
    return json.dumps(error_document(code, title, detail), ensure_ascii=False, separators=(",", ":")).encode()
