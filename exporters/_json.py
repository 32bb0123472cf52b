"""Compact JSON for the backends' encoders (worker thread or shipper process): ``dumps(obj) -> str``.

The same text as ``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode``,
without the per-call work of ``JSONEncoder.encode`` (it builds a new C encoder for every call):
the C encoder is built once, and without the circular-reference check, since what the backends
encode comes from :func:`ofsre.instrumentation.logs.record_fields` (fresh, depth-bounded containers;
a cycle would end in ``RecursionError``, counted as an unformattable record).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

__all__ = ["dumps"]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _make() -> Callable[[Any], str]:
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)   # not in typeshed
    if c_make_encoder is None:   # pure-Python json: the plain encoder
        return _encoder.encode
    chunks = c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
    join = "".join

    def dumps(obj: Any) -> str:
        if type(obj) is str:
            return str(encode_basestring(obj))
        return join(chunks(obj, 0))

    return dumps


dumps: Callable[[Any], str] = _make()
