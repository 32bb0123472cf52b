"""Open Finance error bodies, and the exception handlers that make every error one.

Every API of Open Finance Brasil answers errors with the same body (openfinance.md §4)::

    {"errors": [{"code": "NOT_FOUND", "title": "Not found", "detail": "…"}],
     "meta": {"totalRecords": 1, "totalPages": 1, "requestDateTime": "2025-01-02T03:04:05Z"}}

The document itself (and the date-time format of its ``requestDateTime``) is
:mod:`ofsre.instrumentation.openfinance`'s, which the middleware's own 400 uses too.
Raise :class:`OFError` in an endpoint, or build a response with :func:`error_response`
(the gateway sends it straight from its ASGI proxy). :func:`install_error_handlers` turns
FastAPI's validation errors, HTTP exceptions and any unexpected exception into this body,
so malformed input gets a 4xx with it and a bug a 500 with it, never a stack trace.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ofsre.instrumentation.openfinance import MAX_DETAIL, error_body

__all__ = ["OFError", "error_response", "install_error_handlers", "DEFAULT_CODES",
           "ErrorBody", "ERROR_RESPONSES", "ERROR_MEDIA_TYPE"]

_log = logging.getLogger("ofsre.platform.errors")

# status → (code, title) used when the raiser gives none. Codes follow the spec's style.
DEFAULT_CODES: dict[int, tuple[str, str]] = {
    400: ("PARAMETRO_INVALIDO", "Invalid parameter"),
    401: ("UNAUTHORIZED", "Unauthorized"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    409: ("CONFLICT", "Conflict"),
    406: ("NOT_ACCEPTABLE", "Not acceptable"),
    413: ("PAYLOAD_TOO_LARGE", "Payload too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
    422: ("PARAMETRO_INVALIDO", "Unprocessable entity"),
    423: ("LOCKED", "Locked"),
    429: ("TOO_MANY_REQUESTS", "Too many requests"),
    500: ("INTERNAL_SERVER_ERROR", "Internal server error"),
    502: ("BAD_GATEWAY", "Bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "Service unavailable"),
    504: ("GATEWAY_TIMEOUT", "Gateway timeout"),
    529: ("SITE_IS_OVERLOADED", "Site is overloaded"),
}
# The error content type every Open Finance document gives its JSON errors (consents, accounts,
# resources, and payments' non-422 errors): with the charset, which a validator compares too.
ERROR_MEDIA_TYPE = "application/json; charset=utf-8"


class _Error(BaseModel):
    code: str = Field(max_length=255)
    title: str = Field(max_length=255)
    detail: str = Field(max_length=MAX_DETAIL)


class _ErrorMeta(BaseModel):
    totalRecords: int
    totalPages: int
    requestDateTime: str


class ErrorBody(BaseModel):
    """The error body of every Open Finance API (for the OpenAPI documents)."""

    errors: list[_Error] = Field(min_length=1, max_length=13)
    meta: _ErrorMeta


# Declared on every router, so the OpenAPI documents list the errors the services really send
# (422 included: it replaces FastAPI's own validation-error schema).
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": DEFAULT_CODES[status][1]}
    for status in (400, 401, 403, 404, 405, 409, 422, 500)
}


class OFError(Exception):
    """An error to answer with the Open Finance body: ``raise OFError(404, detail="no such consent")``."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        default_code, default_title = DEFAULT_CODES.get(status, (f"HTTP_{status}", f"HTTP {status}"))
        super().__init__(detail)
        self.status = status
        self.code = code or default_code
        self.title = title or default_title
        self.detail = detail
        self.headers = headers


def error_response(status: int, detail: str, *, code: str | None = None, title: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """A ready ``Response`` (also a plain ASGI app) with the Open Finance error body."""
    err = OFError(status, detail, code=code, title=title)
    return Response(error_body(err.code, err.title, err.detail), status_code=status, headers=headers,
                    media_type=ERROR_MEDIA_TYPE)


def _validation_status(exc: RequestValidationError) -> tuple[int, str]:
    """400 for unreadable input or a bad header/query/path parameter; 422 for a body that parses
    but breaks the schema (as the spec separates malformed requests from rejected contents)."""
    errors = exc.errors()
    parts, status = [], 422
    for e in errors[:10]:
        loc = [str(x) for x in e.get("loc", ())]
        # unreadable JSON, a body that is not even an object, or a bad parameter: malformed request
        if (e.get("type") == "json_invalid" or loc == ["body"]
                or (loc and loc[0] in ("header", "query", "path", "cookie"))):
            status = 400
        # never the input value: it may be personal data
        parts.append(f"{'.'.join(loc)}: {e.get('msg', 'invalid')}")
    return status, "; ".join(parts) or "invalid request"


async def _on_of_error(request: Request, exc: OFError) -> Response:
    return error_response(exc.status, exc.detail, code=exc.code, title=exc.title, headers=exc.headers)


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    status, detail = _validation_status(exc)
    code = "PARAMETRO_NAO_INFORMADO" if "Field required" in detail and status == 400 else None
    return error_response(status, detail, code=code)


async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "unexpected error; see the service log for this x-fapi-interaction-id")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` through the Open Finance body."""
    # Starlette types a handler as taking any Exception, though it calls each one only with its own class.
    app.add_exception_handler(OFError, _on_of_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
