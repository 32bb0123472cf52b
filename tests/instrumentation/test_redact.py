"""Redaction: a corpus of real-shaped sensitive values, and near misses that must survive."""

import random

import pytest

from ofsre.instrumentation.redact import (
    CNPJ_MARK,
    CPF_MARK,
    EMAIL_MARK,
    JWT_MARK,
    SECRET_MARK,
    TOKEN_MARK,
    is_sensitive_key,
    is_valid_cnpj,
    is_valid_cpf,
    redact_text,
    redact_value,
)

# --- an independent check-digit implementation (the "módulo 11" form, weights 2..9 from the right),
# so the corpus does not come from the code under test.


def _mod11_digit(chars: str, max_weight: int) -> str:
    total, weight = 0, 2
    for char in reversed(chars):
        total += (ord(char) - 48) * weight
        weight = 2 if weight == max_weight else weight + 1
    rest = total % 11
    return "0" if rest < 2 else str(11 - rest)


def make_cpf(base: str) -> str:
    first = _mod11_digit(base, 11)
    return base + first + _mod11_digit(base + first, 11)


def make_cnpj(base: str) -> str:
    first = _mod11_digit(base, 9)
    return base + first + _mod11_digit(base + first, 9)


def fmt_cpf(d: str) -> str:
    return f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}"


def fmt_cnpj(d: str) -> str:
    return f"{d[:2]}.{d[2:5]}.{d[5:8]}/{d[8:12]}-{d[12:]}"


def _independently_valid_cpf(digits: str) -> bool:
    return len(set(digits)) > 1 and make_cpf(digits[:9]) == digits


RNG = random.Random(20250101)
CPFS = [make_cpf("".join(RNG.choice("0123456789") for _ in range(9))) for _ in range(40)]
CNPJS = [make_cnpj("".join(RNG.choice("0123456789") for _ in range(8)) + "0001") for _ in range(40)]
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM_CNPJS = [make_cnpj("".join(RNG.choice(ALNUM) for _ in range(12))) for _ in range(20)]
JWT = ("eyJhbGciOiJQUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiI1Mjk5ODIyNDcyNSIsImF1ZCI6Im9mIn0"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmVfXy0tMTIz")


def test_known_published_examples():
    assert is_valid_cpf("529.982.247-25")
    assert is_valid_cnpj("11.222.333/0001-81")
    assert is_valid_cnpj("00.000.000/0001-91")      # Banco do Brasil
    assert is_valid_cnpj("12.ABC.345/01DE-35")      # the Receita's alphanumeric example
    assert not is_valid_cpf("111.111.111-11")       # passes the arithmetic, never issued
    assert not is_valid_cnpj("00.000.000/0000-00")


@pytest.mark.parametrize("cpf", CPFS)
def test_valid_cpfs_are_redacted_formatted_and_bare(cpf):
    assert is_valid_cpf(cpf)
    for text in (f"cliente {fmt_cpf(cpf)} pagou", f"cpf={cpf}&x=1", f'{{"doc": "{cpf}"}}',
                 f"({fmt_cpf(cpf)})."):
        out = redact_text(text)
        assert CPF_MARK in out and cpf[:9] not in out.replace(".", ""), (text, out)


@pytest.mark.parametrize("cnpj", CNPJS + ALNUM_CNPJS)
def test_valid_cnpjs_are_redacted(cnpj):
    assert is_valid_cnpj(cnpj)
    out = redact_text(f"empresa {fmt_cnpj(cnpj)}, recebedor")
    assert out == f"empresa {CNPJ_MARK}, recebedor"
    if cnpj.isdigit():
        assert redact_text(f"cnpj {cnpj} ok") == f"cnpj {CNPJ_MARK} ok"


@pytest.mark.parametrize(("text", "expected"), [
    (f"token {JWT} rejected", f"token {JWT_MARK} rejected"),
    (f"request_object={JWT}", f"request_object={JWT_MARK}"),
    (f"Authorization: Bearer {JWT}", f"Authorization: Bearer {TOKEN_MARK}"),
    ("authorization: bearer 2YotnFZFEjr1zCsicMWpAA", f"authorization: bearer {TOKEN_MARK}"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", f"Authorization: Basic {TOKEN_MARK}"),
    ("grant_type=client_credentials&client_secret=s3cr3t-XYZ&scope=accounts",
     f"grant_type=client_credentials&client_secret={SECRET_MARK}&scope=accounts"),
    ('{"client_id": "abc", "client_secret": "a \\"quoted\\" secret"}',
     f'{{"client_id": "abc", "client_secret": "{SECRET_MARK}"}}'),
    ("password=hunter2 user=ana", f"password={SECRET_MARK} user=ana"),
    ("OFSRE_LOKI_PASSWORD: p@ss", f"OFSRE_LOKI_PASSWORD: {SECRET_MARK}"),
    ("x-api-key: abc123", f"x-api-key: {SECRET_MARK}"),
    ("redirect=https://bank/cb?access_token=tok123&state=1",
     f"redirect=https://bank/cb?access_token={SECRET_MARK}&state=1"),
    ("senha='minha senha'", f"senha='{SECRET_MARK}'"),
    ("contato ana.souza+pix@banco.example.com.br hoje", f"contato {EMAIL_MARK} hoje"),
    ("from: JOAO_1@Example.COM", f"from: {EMAIL_MARK}"),
    # every Authorization value, whatever its scheme or shape; cookies whole (issue #7)
    ("token Bearer abc.def", f"token Bearer {TOKEN_MARK}"),
    ("Illegal header value b'Bearer consent:TOPSECRET123 '", f"Illegal header value b'Bearer {TOKEN_MARK} '"),
    ("authorization: Bearer consent:urn:ofsre:1234", f"authorization: Bearer {TOKEN_MARK}"),
    ("Authorization: Digest username=ana, response=6629fae4", f"Authorization: Digest {TOKEN_MARK}"),
    ("Proxy-Authorization: opaque", f"Proxy-Authorization: {TOKEN_MARK}"),
    ('{"authorization": "DPoP x"}', f'{{"authorization": "DPoP {TOKEN_MARK}"}}'),
    ("cookie: session=abc; csrf=def", f"cookie: {SECRET_MARK}"),
    ("Set-Cookie: id=a3fWa; Path=/; HttpOnly", f"Set-Cookie: {SECRET_MARK}"),
])
def test_secrets_tokens_and_emails(text, expected):
    assert redact_text(text) == expected


NEAR_MISSES = [
    # 11 and 14 digits with wrong check digits
    *[cpf[:10] + str((int(cpf[10]) + 1) % 10) for cpf in CPFS[:10]],
    *[fmt_cpf(cpf[:9] + str((int(cpf[9]) + 1) % 10) + cpf[10]) for cpf in CPFS[:10]],
    *[cnpj[:13] + str((int(cnpj[13]) + 1) % 10) for cnpj in CNPJS[:10]],
    "111.111.111-11", "00000000000",
    # phone numbers
    "+55 11 91234-5678", "(11) 91234-5678", "11 3003-4070", "+5511912345678", "0800 729 0722",
    # ids
    "123e4567-e89b-12d3-a456-426614174000", "52998224-7251-1234-5678-123456789012",
    "trace_id=4bf92f3577b34da6a3ce929d0e0e4736",
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "span 00f067aa0ba902b7", "trace 52998224725529982247255299822472",
    "order ORD-2025-000123", "pedido 98765432100123456", "ORD52998224725",
    "pix E0000000020250101123456789ABCD",
    # timestamps and amounts
    "2025-01-02T03:04:05.678Z", "at 1735787045 s", "epoch_ms 1735787045123", "R$ 1.234.567,89",
    "valor 52998224725,50", "amount 52998224725.10", "12345678.90",
    # bank details
    "agência 0001 conta 12345-6", "conta 1234567-8", "ispb 00000000",
    # words that only look like schemes or keys
    "the bearer of bad news", "basic information", "token_type=Bearer", "max_tokens=10", "status code: 404",
    "user@host", "v1.2.3", "route=/open-banking/accounts/v2/accounts/{accountId}",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_survive(text):
    assert redact_text(text) == text


def test_phone_number_corpus_is_honest():
    # An 11-digit mobile number that happens to be a valid CPF *is* redacted; the corpus avoids those.
    assert not _independently_valid_cpf("11912345678")
    assert redact_text("ligar 11912345678") == "ligar 11912345678"


def test_clean_text_is_returned_as_is():
    text = "GET /open-banking/accounts/v2/accounts 200"
    assert redact_text(text) is text
    assert redact_text("") == ""


def test_redact_value_recurses_and_replaces_sensitive_keys_whole():
    event = {
        "Authorization": "Bearer abc.def.ghi",
        "client-secret": "x",
        "cpfNumber": "12345",                 # replaced by key, whatever the value
        "CNPJ": 11222333000181,
        "token": None,                         # nothing to hide
        "payer": {"name": "Ana", "email": "ana@example.com", "docs": [fmt_cpf(CPFS[0]), ("x", CNPJS[0])]},
        "amount": "10.00",
        "count": 3,
        "raw": 52998224725,                    # a CPF stored as an int
    }
    out = redact_value(event)
    assert out == {
        "Authorization": SECRET_MARK,
        "client-secret": SECRET_MARK,
        "cpfNumber": CPF_MARK,
        "CNPJ": CNPJ_MARK,
        "token": None,
        "payer": {"name": "Ana", "email": EMAIL_MARK, "docs": [CPF_MARK, ("x", CNPJ_MARK)]},
        "amount": "10.00",
        "count": 3,
        "raw": CPF_MARK,
    }
    assert event["payer"]["email"] == "ana@example.com"  # the input is not modified


def test_redact_value_survives_cycles_and_odd_types():
    loop: dict = {"a": 1}
    loop["self"] = loop
    out = redact_value(loop)
    assert out["a"] == 1 and isinstance(out["self"], dict)
    marker = object()
    assert redact_value(marker) is marker
    assert redact_value(1.5) == 1.5


def test_sensitive_key_names():
    for key in ("authorization", "X-Api-Key", "client_secret", "clientSecret", "db_password", "refreshToken",
                "cpf", "cpfNumber", "cnpj"):
        assert is_sensitive_key(key), key
    for key in ("token_type", "expires_in", "interaction_id", "consentId", "amount"):
        assert not is_sensitive_key(key), key
