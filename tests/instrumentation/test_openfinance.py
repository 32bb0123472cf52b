"""The Open Finance error document and date-time format shared by the middleware and the platform."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from ofsre.instrumentation.openfinance import MAX_DETAIL, error_body, error_document, format_datetime


def test_format_datetime_is_utc_seconds_z_whatever_the_input_zone():
    brasilia = timezone(timedelta(hours=-3))
    assert format_datetime(datetime(2025, 1, 2, 0, 4, 5, 999_999, tzinfo=brasilia)) == "2025-01-02T03:04:05Z"
    assert format_datetime(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05Z"  # naive: stored UTC
    with_ms = format_datetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), milliseconds=True)
    assert with_ms == "2025-01-02T03:04:05.000Z"


def test_format_datetime_defaults_to_now():
    before = datetime.now(UTC).replace(microsecond=0)
    now = datetime.strptime(format_datetime(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= now <= datetime.now(UTC)


def test_error_document_has_the_specifications_shape_and_bounds():
    document = error_document("NOT_FOUND", "Not found", "x" * (MAX_DETAIL + 10))
    assert set(document) == {"errors", "meta"}
    [error] = document["errors"]
    assert (error["code"], error["title"], len(error["detail"])) == ("NOT_FOUND", "Not found", MAX_DETAIL)
    meta = document["meta"]
    assert (meta["totalRecords"], meta["totalPages"]) == (1, 1) and meta["requestDateTime"].endswith("Z")


def test_error_body_is_the_document_as_compact_utf8_json():
    body = error_body("PARAMETRO_INVALIDO", "Parâmetro inválido", "O cabeçalho é obrigatório")
    assert "Parâmetro inválido".encode() in body and b", " not in body and b": " not in body
    document = json.loads(body)
    assert document["errors"] == [{"code": "PARAMETRO_INVALIDO", "title": "Parâmetro inválido",
                                   "detail": "O cabeçalho é obrigatório"}]
