"""The shipper process's line path: a Loki entry built straight from a frame is byte for byte the entry of
the record path (``Shipper.encode(record_of_frame(frame))``: ``record_fields`` and its redaction, then
``LokiBackend.encode``), for any record: both build the fields with ``build_fields``, from a frame's
parts and from a record's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ofsre.exporters._core import Shipper
from ofsre.exporters._options import ShipperOptions, _validate
from ofsre.exporters._process import frame_capture, frame_encoder, record_of_frame
from ofsre.exporters.loki import LOKI_LIMITS, LokiBackend
from ofsre.instrumentation.redact import CPF_MARK

IDENTITY = {"service": "payments", "env": "prod", "version": "1.4.0"}
OPTIONS = _validate(ShipperOptions(), LOKI_LIMITS)
CONFIGS = {   # label_fields, structured_metadata
    "default": (("service", "env", "level"), False),
    "level only": (("level",), False),
    "no labels": ((), False),
    "metadata": (("service", "env", "level"), True),
    "service, metadata": (("service",), True),
}


@pytest.fixture(scope="module")
def shippers() -> Iterator[dict[str, Shipper]]:
    made = {}
    for name, (label_fields, metadata) in CONFIGS.items():
        backend = LokiBackend("http://127.0.0.1:9", service=IDENTITY["service"], env=IDENTITY["env"],
                              tenant=None, headers={}, labels={"cluster": "sp1"}, label_fields=label_fields,
                              structured_metadata=metadata)
        made[name] = Shipper(backend, OPTIONS, CollectorRegistry(), **IDENTITY)
    yield made
    for shipper in made.values():
        shipper.close(timeout=0.1)


def _through_record(shipper: Shipper, frame: bytes):
    return shipper.encode(record_of_frame(frame, LokiBackend.record_attributes))


def _encoder(shipper: Shipper):
    encode = frame_encoder(shipper, LokiBackend.record_attributes, IDENTITY)
    assert encode.__name__ == "encode", "the line path is off for this backend"
    return encode


# Text with something to redact now and then, and extras named like record_fields' own fields.
SENSITIVE = ["123.456.789-09", "52998224725", "11.222.333/0001-81", "Bearer abcDEF123", "ana@example.com",
             "password=hunter2", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Authorization: Basic dXNlcg==",
             "token: x-1", "é ü 漢字", '"quoted" \\ back', "\n\t"]
text = st.lists(st.one_of(st.sampled_from(SENSITIVE), st.text(max_size=12)), max_size=5).map(" ".join)
KEYS = ["payment_id", "level", "service", "env", "version", "timestamp", "logger", "extra_level",
        "extra_service", "exception", "stack", "cpf", "client_secret", "clientSecret", "items", "amount"]
keys = st.sampled_from(KEYS) | st.text(max_size=6)
scalars = st.one_of(text, st.integers(-10**15, 10**15), st.sampled_from([52998224725, 11222333000181]),
                    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.tuples(inner, inner),
                                                       st.dictionaries(keys, inner, max_size=3)),
                      max_leaves=8)


class Opaque:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


@st.composite
def records(draw) -> logging.LogRecord:
    log = logging.getLogger(draw(st.sampled_from(["payments.pix", "a", "ünïcode.logger"])))
    level = draw(st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 25]))
    message = draw(text)
    args = ()
    if draw(st.booleans()):
        message, args = message.replace("%", "%%") + " %s and %r", (draw(text), draw(values))
    extra = draw(st.dictionaries(st.sampled_from(KEYS) | st.text("abcxyz_", min_size=1, max_size=8),
                                 values | st.builds(Opaque, text), max_size=6))
    exc_info = None
    if draw(st.booleans()):
        try:
            raise ValueError(draw(text))
        except ValueError:
            exc_info = sys.exc_info()
    stack = draw(st.none() | text)
    record = log.makeRecord(log.name, level, "f.py", 1, message, args, exc_info, sinfo=stack,
                            extra={k: v for k, v in extra.items() if not k.startswith("_")
                                   and k not in ("message", "asctime")})
    if draw(st.booleans()):   # ContextFilter's ids, or none
        record.trace_id = draw(st.none() | st.just("a" * 32))
        record.span_id = draw(st.none() | st.just("b" * 16))
        record.interaction_id = draw(st.none() | text)
    return record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records(), config=st.sampled_from(list(CONFIGS)))
def test_the_line_path_gives_the_record_path_s_bytes(shippers, record, config):
    shipper = shippers[config]
    frame = frame_capture(LokiBackend.record_attributes)(record)
    entry = _encoder(shipper)(frame)
    assert entry is not None
    assert entry == _through_record(shipper, frame)


def test_a_line_above_the_record_limit_is_truncated_as_the_record_path_does(shippers):
    shipper = shippers["default"]
    log = logging.getLogger("big")
    record = log.makeRecord(log.name, logging.INFO, "f.py", 1, "cpf 123.456.789-09 " + "x" * 300_000, (),
                            None)
    frame = frame_capture(LokiBackend.record_attributes)(record)
    entry = _encoder(shipper)(frame)
    assert entry == _through_record(shipper, frame)
    assert entry.size <= LOKI_LIMITS.max_record_bytes and b"truncated" in entry.body
    assert CPF_MARK.encode() in entry.body


def test_a_frame_the_record_path_refuses_is_counted_the_same_way(shippers):
    shipper = shippers["default"]
    encode = _encoder(shipper)
    before = shipper.stats().get("dropped_unformattable", 0)
    assert encode(b"not a frame") is None
    assert shipper.stats()["dropped_unformattable"] == before + 1


class RecordOnlyLoki(LokiBackend):
    line_omits = None   # a backend that encodes from records only


def test_a_backend_without_a_line_encoder_goes_through_the_record():
    backend = RecordOnlyLoki("http://127.0.0.1:9", service="payments", env="prod", tenant=None, headers={},
                             labels={}, label_fields=("level",), structured_metadata=False)
    shipper = Shipper(backend, OPTIONS, CollectorRegistry(), **IDENTITY)
    try:
        encode = frame_encoder(shipper, LokiBackend.record_attributes, IDENTITY)
        assert encode.__name__ == "through_record"
        log = logging.getLogger("p")
        frame = frame_capture(LokiBackend.record_attributes)(
            log.makeRecord(log.name, logging.INFO, "f.py", 1, "cpf 123.456.789-09", (), None))
        assert CPF_MARK.encode() in encode(frame).body
    finally:
        shipper.close(timeout=0.1)
