"""``x-fapi-interaction-id`` (openfinance.md §4): validate, echo, generate, optionally reject with 400."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from ofsre.instrumentation import semconv
from ofsre.instrumentation._asgi import is_valid_interaction_id
from ofsre.instrumentation.exposition import render

VALID = [
    "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d",      # v4, variant 9
    "3F2B8C1E-5D4A-4B6F-AC2D-1A0E7F6B5C4D",      # upper case, variant A
    "c232ab00-9414-11ec-b3c8-9f6bdeced846",      # v1
    "6fa459ea-ee8a-3ca4-894e-db77e160355e",      # v3
    "886313e1-3b8a-5372-9b90-0c9aee199e5d",      # v5
    "a8098c1a-f86e-21da-bd9a-00c04fd430c8",      # v2, variant b
    str(uuid.uuid4()),
]
INVALID = [
    "",
    "not-a-uuid",
    "3f2b8c1e5d4a4b6f9c2d1a0e7f6b5c4d",          # no hyphens
    "{3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d}",    # braces
    "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d0",     # 37 chars
    "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4",       # 35 chars
    "3f2b8c1e-5d4a-0b6f-9c2d-1a0e7f6b5c4d",      # version 0
    "3f2b8c1e-5d4a-6b6f-9c2d-1a0e7f6b5c4d",      # version 6 (not RFC 4122)
    "3f2b8c1e-5d4a-4b6f-7c2d-1a0e7f6b5c4d",      # NCS variant
    "3f2b8c1e-5d4a-4b6f-cc2d-1a0e7f6b5c4d",      # Microsoft variant
    "00000000-0000-0000-0000-000000000000",      # nil UUID
    "3g2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d",      # non-hex
    "3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d\n",    # trailing newline
    " 3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4",      # leading space
    "3f2b8c1e_5d4a_4b6f_9c2d_1a0e7f6b5c4d",      # wrong separators
    "urn:uuid:3f2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d",
    "ｆ2b8c1e-5d4a-4b6f-9c2d-1a0e7f6b5c4d",      # full-width letter
]


@pytest.mark.parametrize("value", VALID)
def test_valid_interaction_ids(value):
    assert is_valid_interaction_id(value)
    assert is_valid_interaction_id(value.encode())


@pytest.mark.parametrize("value", INVALID)
def test_invalid_interaction_ids(value):
    assert not is_valid_interaction_id(value)


def header(headers, name=b"x-fapi-interaction-id"):
    values = [v for k, v in headers if k == name]
    assert len(values) == 1, headers
    return values[0].decode()


@pytest.mark.parametrize("value", VALID)
async def test_a_valid_id_is_echoed_exactly(make_app, call_asgi, value):
    _, headers, _ = await call_asgi(make_app(), "GET", "/items/1", [("x-fapi-interaction-id", value)])
    assert header(headers) == value


@pytest.mark.parametrize("value", [None, *INVALID[:12]])
async def test_a_missing_or_invalid_id_is_replaced_by_a_new_uuid4(make_app, call_asgi, value):
    sent = [] if value is None else [("x-fapi-interaction-id", value)]
    status, headers, _ = await call_asgi(make_app(), "GET", "/items/1", sent)
    generated = header(headers)
    assert status == 200
    assert generated != value and uuid.UUID(generated).version == 4 and is_valid_interaction_id(generated)


async def test_each_request_gets_its_own_generated_id(make_app, call_asgi):
    app = make_app()
    ids = {header((await call_asgi(app, "GET", "/items/1"))[1]) for _ in range(20)}
    assert len(ids) == 20


async def test_the_id_is_in_the_request_context_and_on_the_span_but_never_a_label(
        make_app, registry, span_exporter, call_asgi):
    value = VALID[0]
    _, headers, body = await call_asgi(make_app(), "GET", "/whoami", [("x-fapi-interaction-id", value)])
    assert json.loads(body) == {"interaction_id": value}
    assert span_exporter.get_finished_spans()[0].attributes["fapi.interaction_id"] == value
    exposition, _ = render(registry, "application/openmetrics-text")
    assert value not in exposition.decode()
    from ofsre.instrumentation import context

    assert context.interaction_id() is None  # reset after the request


@pytest.mark.parametrize("value", [None, "nope", INVALID[6]])
async def test_required_id_missing_or_invalid_is_answered_400(make_app, registry, call_asgi, value):
    app = make_app(require_interaction_id=True)
    sent = [] if value is None else [("x-fapi-interaction-id", value)]
    before = datetime.now(UTC).replace(microsecond=0)
    status, headers, body = await call_asgi(app, "GET", "/items/1", sent)
    assert status == 400
    assert is_valid_interaction_id(header(headers))
    assert (b"content-type", b"application/json; charset=utf-8") in headers
    assert int(header(headers, b"content-length")) == len(body)
    document = json.loads(body)
    assert set(document) == {"errors", "meta"}
    [error] = document["errors"]
    assert set(error) == {"code", "title", "detail"} and all(error.values())
    assert error["code"] == ("PARAMETRO_NAO_INFORMADO" if value is None else "PARAMETRO_INVALIDO")
    assert "x-fapi-interaction-id" in error["detail"]
    assert document["meta"]["totalRecords"] == 1 and document["meta"]["totalPages"] == 1
    sent_at = datetime.strptime(document["meta"]["requestDateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert sent_at >= before
    assert registry.get_sample_value(semconv.HTTP_REQUESTS.series, {
        "service": "svc", "route": "/items/{item_id}", "method": "GET", "status": "400", "api": "",
        "tier": ""}) == 1


async def test_required_id_present_and_valid_reaches_the_app(make_app, call_asgi):
    status, headers, body = await call_asgi(make_app(require_interaction_id=True), "GET", "/items/1",
                                            [("x-fapi-interaction-id", VALID[1])])
    assert (status, json.loads(body), header(headers)) == (200, {"id": 1}, VALID[1])


async def test_require_comes_from_the_environment(monkeypatch, make_app, call_asgi):
    monkeypatch.setenv("OFSRE_REQUIRE_INTERACTION_ID", "true")
    status, _, _ = await call_asgi(make_app(), "GET", "/items/1")
    assert status == 400
    monkeypatch.setenv("OFSRE_REQUIRE_INTERACTION_ID", "maybe")  # not a boolean: logged, default (off)
    status, _, _ = await call_asgi(make_app(), "GET", "/items/1")
    assert status == 200


async def test_an_id_the_app_set_itself_is_not_duplicated(registry, tracer_provider, call_asgi):
    from ofsre.instrumentation import instrument_app

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-fapi-interaction-id", VALID[0].encode())]})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = instrument_app(app, "svc", registry=registry, tracer_provider=tracer_provider)
    _, headers, _ = await call_asgi(wrapped, "GET", "/", [("x-fapi-interaction-id", VALID[2])])
    assert header(headers) == VALID[0]
