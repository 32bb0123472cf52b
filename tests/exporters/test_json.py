"""``exporters._json.dumps``: the backends' compact JSON is the stdlib encoder's text, faster."""

from __future__ import annotations

import json
import math

import pytest

from ofsre.exporters._json import dumps

_STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class _Opaque:
    def __str__(self) -> str:
        return 'an "object"\n'


@pytest.mark.parametrize("value", [
    {"logger": "a.b", "message": "pagou R$ 10,00 — ação", "trace_id": None, "n": 1, "ok": True, "f": 0.1},
    {"nested": {"list": [1, 2.5, None, False, "x\ty"], "empty": {}}, "obj": _Opaque(), 3: "int key"},
    ["a", {"b": []}], "a \"quoted\" string\u2028", 12, math.nan, {"inf": math.inf}, _Opaque(), None,
])
def test_dumps_is_the_stdlib_encoders_text(value):
    assert dumps(value) == _STDLIB(value)


def test_a_cycle_fails_instead_of_looping():
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises((RecursionError, ValueError)):
        dumps(cyclic)
