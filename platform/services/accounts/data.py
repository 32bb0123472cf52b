"""Deterministic, seeded account data: the same customer always has the same accounts.

Nothing here touches the database. A customer's accounts come from a random generator
seeded with their document (CPF); a day's transactions from one seeded with the account and
the date, so any date range can be produced on demand, pages are stable, and two replicas of
the accounts service give byte-identical answers::

    accounts = customer_accounts("12345678901")
    balances(accounts[0])
    transactions(accounts[0], date(2025, 1, 1), date(2025, 1, 31))   # newest first

Amounts follow the spec's format (decimal string, four places, currency BRL).
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ofsre.instrumentation.openfinance import format_datetime

__all__ = ["ACCOUNT_TYPES", "Account", "customer_accounts", "find_account", "balances", "overdraft_limits",
           "transactions"]

_BANK = {"brandName": "Banco ofsre", "companyCnpj": "12345678000195", "compeCode": "999"}
ACCOUNT_TYPES = ("CONTA_DEPOSITO_A_VISTA", "CONTA_POUPANCA", "CONTA_PAGAMENTO_PRE_PAGA")
_SUBTYPES = ("INDIVIDUAL", "CONJUNTA_SIMPLES", "CONJUNTA_SOLIDARIA")
# Values of accounts 2.4.2's EnumTransactionTypes (a transfer within the bank is
# TRANSFERENCIA_MESMA_INSTITUICAO there, not the colloquial "TEF").
_TX_TYPES = ("PIX", "TED", "TRANSFERENCIA_MESMA_INSTITUICAO", "BOLETO", "CARTAO", "CONVENIO_ARRECADACAO",
             "FOLHA_PAGAMENTO")
_TX_NAMES = {"PIX": "Pix", "TED": "TED", "TRANSFERENCIA_MESMA_INSTITUICAO": "Transferencia",
             "BOLETO": "Pagamento de boleto",
             "CARTAO": "Compra no cartao", "CONVENIO_ARRECADACAO": "Conta de consumo",
             "FOLHA_PAGAMENTO": "Salario"}


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(seed[:16], "big"))


def _money(value: float) -> dict[str, str]:
    return {"amount": f"{value:.4f}", "currency": "BRL"}


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    type: str
    subtype: str
    branch_code: str
    number: str
    check_digit: str

    def summary(self) -> dict:
        """The ``/accounts`` list item."""
        return {**_BANK, "type": self.type, "branchCode": self.branch_code, "number": self.number,
                "checkDigit": self.check_digit, "accountId": self.account_id}

    def identification(self) -> dict:
        """The ``/accounts/{accountId}`` body."""
        return {"compeCode": _BANK["compeCode"], "branchCode": self.branch_code, "number": self.number,
                "checkDigit": self.check_digit, "type": self.type, "subtype": self.subtype, "currency": "BRL"}


@functools.lru_cache(maxsize=8192)  # bounded: a few KB per customer
def customer_accounts(document: str) -> tuple[Account, ...]:
    """One to three accounts of the customer with this document, always the same ones."""
    rng = _rng("customer", document)
    accounts = []
    for i in range(rng.randint(1, 3)):
        digest = hashlib.sha256(f"account|{document}|{i}".encode()).hexdigest()
        accounts.append(Account(
            account_id=f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
            type=ACCOUNT_TYPES[0] if i == 0 else rng.choice(ACCOUNT_TYPES), subtype=rng.choice(_SUBTYPES),
            branch_code=f"{rng.randint(1, 9999):04d}", number=f"{rng.randint(10_000, 99_999_999)}",
            check_digit=str(rng.randint(0, 9))))
    return tuple(accounts)


def find_account(document: str, account_id: str) -> Account | None:
    return next((a for a in customer_accounts(document) if a.account_id == account_id), None)


def balances(account: Account, now: datetime | None = None) -> dict:
    rng = _rng("balances", account.account_id)
    return {"availableAmount": _money(rng.uniform(0, 50_000)),
            "blockedAmount": _money(rng.choice((0, 0, 150.5))),
            "automaticallyInvestedAmount": _money(rng.uniform(0, 10_000)),
            "updateDateTime": format_datetime(now)}


def overdraft_limits(account: Account) -> dict:
    rng = _rng("overdraft", account.account_id)
    limit = rng.choice((0, 500, 1_000, 5_000))
    used = round(rng.uniform(0, limit), 2) if limit else 0
    return {"overdraftContractedLimit": _money(limit), "overdraftUsedLimit": _money(used),
            "unarrangedOverdraftAmount": _money(0)}


@functools.lru_cache(maxsize=32_768)  # bounded; callers never mutate the cached items
def _day_transactions(account: Account, day: date) -> tuple[dict, ...]:
    rng = _rng("transactions", account.account_id, day.isoformat())
    items = []
    for i in range(rng.randint(0, 4)):
        kind = rng.choice(_TX_TYPES)
        credit = kind == "FOLHA_PAGAMENTO" or rng.random() < 0.35
        at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 86_399))
        party = f"{rng.randint(10**10, 10**11 - 1)}"
        items.append({
            "transactionId": hashlib.sha256(f"{account.account_id}|{day}|{i}".encode()).hexdigest()[:32],
            "completedAuthorisedPaymentType": "TRANSACAO_EFETIVADA",
            "creditDebitType": "CREDITO" if credit else "DEBITO",
            "transactionName": _TX_NAMES[kind], "type": kind,
            "transactionAmount": _money(rng.uniform(1, 3_000)),
            "transactionDateTime": format_datetime(at, milliseconds=True),
            "partieCnpjCpf": party, "partiePersonType": "PESSOA_NATURAL",
            "partieCompeCode": "001", "partieBranchCode": f"{rng.randint(1, 9999):04d}",
            "partieNumber": f"{rng.randint(10_000_000, 99_999_999)}",
            "partieCheckDigit": str(rng.randint(0, 9)),
        })
    return tuple(sorted(items, key=lambda t: t["transactionDateTime"], reverse=True))


def transactions(account: Account, first: date, last: date, credit_debit: str | None = None) -> list[dict]:
    """Booked transactions between two dates (inclusive), newest first."""
    items: list[dict] = []
    day = last
    while day >= first:
        items.extend(_day_transactions(account, day))
        day -= timedelta(days=1)
    if credit_debit:
        items = [t for t in items if t["creditDebitType"] == credit_debit]
    return items
