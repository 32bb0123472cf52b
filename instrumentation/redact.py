"""Remove LGPD-sensitive values from log text and structured log fields.

Every log line ofsre writes (``logs.JsonFormatter``) and every record the log shippers send
goes through this module first, so a CPF typed into a message never reaches Loki,
Datadog or Elastic::

    from ofsre.instrumentation.redact import redact_text, redact_value

    redact_text("cliente 123.456.789-09 pagou, token Bearer abc.def")
    # 'cliente [CPF] pagou, token Bearer [TOKEN]'
    redact_value({"client_secret": "s3cr3t", "payer": {"email": "ana@example.com"}})
    # {'client_secret': '[SECRET]', 'payer': {'email': '[EMAIL]'}}

What is replaced, and by what:

=================================================  ============
CPF (``000.000.000-00`` or 11 bare digits)           ``[CPF]``
CNPJ (``00.000.000/0000-00`` or 14 bare digits;      ``[CNPJ]``
the 2026 alphanumeric form when punctuated)
JWT / JWE (``eyJ…`` dot-separated base64url)         ``[JWT]``
``Bearer <token>`` / ``Basic <credentials>``         ``Bearer [TOKEN]``
``Authorization: <any scheme> <anything>``,          ``Authorization: [TOKEN]``,
``Cookie: …``, ``Set-Cookie: …`` (the whole value)   ``Cookie: [SECRET]``
``client_secret=…``, ``"password": "…"``, …          ``[SECRET]``
e-mail addresses                                     ``[EMAIL]``
=================================================  ============

A CPF or CNPJ is replaced only when its check digits are valid, so order ids,
amounts, timestamps and most phone numbers survive. A number that happens to be a
valid CPF (about one 11-digit number in a hundred) is redacted: that is the price of
never leaking a real one.

``redact_text`` costs a few substring tests on a line with nothing to redact; each
regex runs only when its cheap hint (a digit run, ``@``, ``eyJ``, a keyword) is present.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = [
    "redact_text", "redact_value", "is_valid_cpf", "is_valid_cnpj", "is_sensitive_key",
    "CPF_MARK", "CNPJ_MARK", "JWT_MARK", "TOKEN_MARK", "SECRET_MARK", "EMAIL_MARK",
]

CPF_MARK = "[CPF]"
CNPJ_MARK = "[CNPJ]"
JWT_MARK = "[JWT]"
TOKEN_MARK = "[TOKEN]"
SECRET_MARK = "[SECRET]"
EMAIL_MARK = "[EMAIL]"

# Nested containers deeper than this are cut (and a cycle cannot recurse forever).
_MAX_DEPTH = 12
_TRUNCATED = "[TRUNCATED]"


# --- check digits -------------------------------------------------------------------------------

def _cpf_digit(digits: str, first_weight: int) -> int:
    total = sum(int(d) * w for d, w in zip(digits, range(first_weight, 1, -1), strict=True))
    rest = total * 10 % 11
    return 0 if rest == 10 else rest


def is_valid_cpf(value: str) -> bool:
    """True when ``value`` (punctuation allowed) is 11 digits with valid CPF check digits.

    Numbers made of one repeated digit (``111.111.111-11``) pass the arithmetic but are
    never issued, so they are not CPFs.
    """
    digits = value.replace(".", "").replace("-", "")
    if len(digits) != 11 or not digits.isdigit() or digits == digits[0] * 11:
        return False
    return (_cpf_digit(digits[:9], 10) == int(digits[9])
            and _cpf_digit(digits[:10], 11) == int(digits[10]))


_CNPJ_WEIGHTS = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def _cnpj_digit(chars: str) -> int:
    # ord(c) - 48 is the digit's value for 0-9 and the Receita's value for A-Z (IN RFB 2.229/2024).
    weights = _CNPJ_WEIGHTS[-len(chars):]
    rest = sum((ord(c) - 48) * w for c, w in zip(chars, weights, strict=True)) % 11
    return 0 if rest < 2 else 11 - rest


def is_valid_cnpj(value: str) -> bool:
    """True when ``value`` (punctuation allowed) is a CNPJ with valid check digits.

    Accepts the numeric form and the alphanumeric one (12 characters 0-9/A-Z, then 2
    check digits) that the Receita Federal issues from July 2026.
    """
    chars = value.replace(".", "").replace("/", "").replace("-", "").upper()
    if (len(chars) != 14 or not chars.isalnum() or not chars.isascii()
            or not chars[12:].isdigit() or chars == chars[0] * 14):
        return False
    return _cnpj_digit(chars[:12]) == int(chars[12]) and _cnpj_digit(chars[:13]) == int(chars[13])


# --- patterns (compiled once) -------------------------------------------------------------------

# A document number is never glued to letters or digits (that keeps 32-hex trace ids, UUIDs,
# longer numbers and ids like "ORD12345678909" out) nor part of an amount like 12345678909,50.
# The lookbehinds sit after the first character so the regex engine can skip ahead to
# candidate characters: twice as fast on a line with nothing to redact.
_DOCUMENT = re.compile(
    r"[0-9A-Z](?<![0-9A-Za-z][0-9A-Z])(?<!\d[.,]\d)(?:"
    r"(?P<cnpj_fmt>[0-9A-Z]\.[0-9A-Z]{3}\.[0-9A-Z]{3}/[0-9A-Z]{4}-\d{2})"
    r"|(?<=\d)(?:(?P<cpf_fmt>\d{2}\.\d{3}\.\d{3}-\d{2})|(?P<bare>\d{13}|\d{10}))"
    r")(?![0-9A-Za-z]|[.,]\d)"
)

_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){2,4}")

# The credential must look like one (see _looks_like_credential), so "bearer of bad news"
# and "basic information" stay; any length ("Bearer abc.def") and the platform's own
# "Bearer consent:<id>" do not.
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic)(?P<sep>\s+)(?P<token>[A-Za-z0-9\-._~+/:]+=*)",
                          re.IGNORECASE)
_TOKEN_SYMBOLS = frozenset("0123456789-._~+/=:")
# A header whose whole value is a credential, whatever its scheme or shape, up to the end of
# the value (a quote, a line break, or the end of a "b'…'" repr): Authorization,
# Proxy-Authorization, Cookie, Set-Cookie. The scheme word of an Authorization is kept.
_CREDENTIAL_HEADER = re.compile(
    r"(?P<name>\b(?:proxy[_-])?authorization|\b(?:set[_-])?cookie)(?P<sep>[\"']?\s*[=:]\s*[\"']?)"
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9._~+/-]*) (?=\S))?(?P<value>[^\"'\r\n]*)", re.IGNORECASE)

# Key names whose value is a secret wherever they appear (``key=value``, ``key: value``,
# ``"key": "value"``). A prefix is allowed: db_password, x-api-key, OFSRE_LOKI_PASSWORD.
_SECRET_NAMES = (r"client_secret|secret|password|passwd|pwd|senha|api[_-]?key|access[_-]?key"
                 r"|secret[_-]?key|private[_-]?key|access_token|refresh_token|id_token|token"
                 r"|client_assertion|code_verifier|credentials?")
_SECRET_NAME = re.compile(r"(?:" + _SECRET_NAMES + r")$")
# Every ``word=`` / ``word:`` / ``"word": ``; _redact_assignments() keeps those whose word is a
# secret name. Matching any word and checking it in Python (cached) is 4x faster than a
# case-insensitive alternation, and the value is not consumed, so "url=https://x?password=y"
# still reaches "password".
_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z0-9_-](?<![A-Za-z0-9_-][A-Za-z0-9_-])[A-Za-z0-9_-]*)[\"']?\s*[=:]\s*"
)
_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s&,;\"'}\]\[][^\s&,;\"'}\]]*")
# Substrings of the names above: if none is in the lowered text, the regex cannot match.
_SECRET_HINTS = ("secret", "passw", "pwd", "senha", "key", "token", "assertion", "verifier", "credential")

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}")

_DIGIT_RUN = re.compile(r"\d{2}")


def _document(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.group("cpf_fmt"):
        return CPF_MARK if is_valid_cpf(text) else text
    if match.group("cnpj_fmt"):
        return CNPJ_MARK if is_valid_cnpj(text) else text
    if len(text) == 11:
        return CPF_MARK if is_valid_cpf(text) else text
    return CNPJ_MARK if is_valid_cnpj(text) else text


def _looks_like_credential(token: str) -> bool:
    """Base64 or a random token has a digit, a symbol or an inner capital; an ordinary word has none."""
    return any(c in _TOKEN_SYMBOLS for c in token) or any(c.isupper() for c in token[1:])


def _credential_header(match: re.Match[str]) -> str:
    if not match.group("value").strip():
        return match.group(0)
    name = match.group("name")
    mark = SECRET_MARK if name.lower().endswith("cookie") else TOKEN_MARK
    scheme = match.group("scheme")
    return name + match.group("sep") + (scheme + " " if scheme else "") + mark


def _auth_scheme(match: re.Match[str]) -> str:
    if not _looks_like_credential(match.group("token")):
        return match.group(0)
    return match.group("scheme") + match.group("sep") + TOKEN_MARK


@lru_cache(maxsize=1024)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name.lower()) is not None


def _redact_assignments(text: str) -> str:
    pieces: list[str] = []
    done = 0
    for match in _ASSIGNMENT.finditer(text):
        if match.start() < done or not _is_secret_name(match.group("name")):
            continue
        value = _VALUE.match(text, match.end())
        if value is None:
            continue
        quote = value.group(0)[0]
        pieces.append(text[done:match.end()])
        pieces.append(quote + SECRET_MARK + quote if quote in "\"'" else SECRET_MARK)
        done = value.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


# --- public API -----------------------------------------------------------------------------------

def redact_text(text: str) -> str:
    """``text`` with every CPF, CNPJ, JWT, bearer/basic credential, secret and e-mail replaced.

    Returns ``text`` itself (same object) when nothing needed replacing.
    """
    if not text:
        return text
    lowered = text.lower()
    # Secrets first: "access_token=eyJ…" becomes "access_token=[SECRET]", not a JWT mark.
    if ("=" in text or ":" in text) and any(hint in lowered for hint in _SECRET_HINTS):
        text = _redact_assignments(text)
    if "authorization" in lowered or "cookie" in lowered:
        text = _CREDENTIAL_HEADER.sub(_credential_header, text)
    if "bearer" in lowered or "basic" in lowered:
        text = _AUTH_SCHEME.sub(_auth_scheme, text)
    if "eyJ" in text:
        text = _JWT.sub(JWT_MARK, text)
    if "@" in text:
        text = _EMAIL.sub(EMAIL_MARK, text)
    if _DIGIT_RUN.search(text):
        text = _DOCUMENT.sub(_document, text)
    return text


_CPF_KEYS = frozenset({"cpf", "cpfnumber", "cpf_number", "nr_cpf", "numero_cpf"})
_CNPJ_KEYS = frozenset({"cnpj", "cnpjnumber", "cnpj_number", "nr_cnpj", "numero_cnpj"})
_SECRET_KEYS = frozenset({
    "authorization", "proxy_authorization", "cookie", "set_cookie", "x_api_key",
    "client_secret", "secret", "password", "passwd", "pwd", "senha", "api_key", "apikey",
    "access_key", "secret_key", "private_key", "token", "access_token", "refresh_token", "id_token",
    "client_assertion", "code_verifier", "credentials", "credential", "session", "sessionid",
})
_SECRET_SUFFIXES = ("_secret", "_password", "_passwd", "_token", "_api_key", "_apikey", "_private_key",
                    "_secret_key", "_access_key", "_senha")


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=2048)
def _key_mark(key: str) -> str | None:
    # clientSecret, Client-Secret and client_secret are one name.
    norm = _CAMEL_BOUNDARY.sub("_", key.strip()).lower().replace("-", "_")
    if norm in _CPF_KEYS:
        return CPF_MARK
    if norm in _CNPJ_KEYS:
        return CNPJ_MARK
    if norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES):
        return SECRET_MARK
    return None


def is_sensitive_key(key: str) -> bool:
    """True when a field named ``key`` (``Authorization``, ``client_secret``, ``cpf``…) is redacted whole."""
    return _key_mark(key) is not None


def _redact_int(value: int) -> int | str:
    # A CPF or CNPJ stored as a number keeps its 11 or 14 digits unless it starts with 0.
    if 10**10 <= value < 10**11 and is_valid_cpf(str(value)):
        return CPF_MARK
    if 10**13 <= value < 10**14 and is_valid_cnpj(str(value)):
        return CNPJ_MARK
    return value


def _redact(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is int:
        return _redact_int(value)
    if depth >= _MAX_DEPTH:
        return _TRUNCATED if isinstance(value, dict | list | tuple) else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            mark = _key_mark(key) if isinstance(key, str) else None
            if isinstance(key, str):
                key = redact_text(key)
            out[key] = mark if mark is not None and item is not None else _redact(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items = [_redact(item, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_value(value: Any) -> Any:
    """A copy of ``value`` with every string redacted, recursing into dicts, lists and tuples.

    A dict entry whose key names a secret or a document (``authorization``, ``client_secret``,
    ``password``, ``token``, ``api_key``, ``cpf``, ``cnpj``, …, any case, ``-`` or ``_``) gets
    its whole value replaced by a marker. Other types (numbers, None, objects) are returned as
    they are, except an int holding a valid CPF or CNPJ.
    """
    return _redact(value, 0)
