"""One reader for every ``OFSRE_*`` variable: the explicit argument, then the environment, then the default.

A variable is declared once, beside the code that reads it, and read through its declaration::

    from ofsre.instrumentation.config import Var, duration

    BATCH_WAIT = Var("OFSRE_LOG_BATCH_WAIT", duration(), 1.0, reader="exporters", argument="batch_wait",
                     doc="seconds a partial batch waits for more")

    BATCH_WAIT.get(batch_wait)          # the argument unless None, else $OFSRE_LOG_BATCH_WAIT, else 1.0
    BATCH_WAIT.from_env(environ)        # a mapping other than os.environ (tests, a pod spec)

The rules are those of OpenTelemetry's ``BatchSpanProcessor`` with ``OTEL_BSP_*``:

- the environment is read only when the argument is ``None`` (or a blank string); a blank variable is unset;
- a malformed environment value is logged once (per variable and value) and the default used: a typo in a
  deployment must not stop a service;
- a bad explicit argument raises ``ValueError`` naming it: a mistake in code fails at start-up.

Kinds, one vocabulary for every reader:

============  ==========================================================================================
``TEXT``      the stripped text
``BOOLEAN``   ``1``/``true``/``yes``/``on`` and ``0``/``false``/``no``/``off``, in any case
``integer``   a whole number in ``[minimum, maximum]``
``number``    a finite decimal number in ``[minimum, maximum]``
``duration``  seconds, a finite decimal number (``unlimited=True``: ``none``/``inf``/``forever``/``never``
              mean no limit, ``None``)
``size``      bytes, a whole number
``choice``    one of a few words, lower-cased
``PATH``      a :class:`pathlib.Path`
``items``     a comma-separated list, each item parsed
``parsed``    any function of the text that raises ``ValueError`` when it is malformed (JSON, …)
============  ==========================================================================================

Every declaration is registered in :data:`REGISTRY` (``registry=None`` opts out, as tests do), so one table
lists them all: ``ofsre config vars --markdown`` (:func:`markdown_table`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "Var", "Kind", "Registry", "REGISTRY", "UNSET", "TEXT", "BOOLEAN", "PATH",
    "integer", "number", "duration", "size", "choice", "items", "parsed",
    "parse_bool", "read", "markdown_table", "TRUE_WORDS", "FALSE_WORDS",
]

T = TypeVar("T")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_UNLIMITED = frozenset({"none", "inf", "forever", "never"})


class _Unset:
    """The type of :data:`UNSET`."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""``var.from_env(env, default=UNSET)`` returns it when the variable is unset or malformed."""
_DECLARED: Any = object()  # "the declared default" (so that UNSET can be asked for)


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How a variable's text (``parse``) and an argument from code (``check``) become a value.

    Both raise ``ValueError`` with a short reason ("must be >= 1") when the value makes no sense.
    """

    label: str
    parse: Callable[[str], T]
    check: Callable[[Any], T]


def parse_bool(text: str) -> bool:
    """The one boolean vocabulary: ``1/true/yes/on`` and ``0/false/no/off``, case-insensitive."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def _check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return parse_bool(value)
    raise ValueError("must be a boolean")


def _check_text(value: Any) -> str:
    if isinstance(value, str | os.PathLike):
        return os.fspath(value).strip() if isinstance(value, str) else os.fspath(value)
    raise ValueError("must be a string")


def _check_path(value: Any) -> Path:
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise ValueError("must be a path")


TEXT: Kind[str] = Kind("text", str.strip, _check_text)
BOOLEAN: Kind[bool] = Kind("boolean", parse_bool, _check_bool)
PATH: Kind[Path] = Kind("path", Path, _check_path)


def _bounded(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be <= {maximum}")


def integer(minimum: int | None = None, maximum: int | None = None, *, label: str = "integer") -> Kind[int]:
    """A whole number in ``[minimum, maximum]`` (an argument may be an integral float: ``1e6``)."""
    def parse(text: str) -> int:
        value = int(text.strip())
        _bounded(value, minimum, maximum)
        return value

    def check(value: Any) -> int:
        if isinstance(value, str):
            return parse(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a whole number")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number")
        _bounded(int(value), minimum, maximum)
        return int(value)
    return Kind(label, parse, check)


def number(minimum: float | None = None, maximum: float | None = None, *,
           label: str = "number") -> Kind[float]:
    """A finite decimal number in ``[minimum, maximum]``."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be a number")
        result = float(value)
        if not math.isfinite(result):
            raise ValueError("must be a finite number")
        _bounded(result, minimum, maximum)
        return result
    return Kind(label, lambda text: check(text.strip()), check)


def duration(minimum: float = 0.0, maximum: float | None = None, *, unlimited: bool = False) -> Kind[Any]:
    """Seconds (a finite decimal number >= ``minimum``); with ``unlimited``, ``none``/``inf``/``forever``/
    ``never`` (or ``math.inf`` from code) give ``None``: no limit."""
    seconds = number(minimum, maximum, label="seconds")

    def check(value: Any) -> float | None:
        word = value.strip().lower() if isinstance(value, str) else None
        if unlimited and (value == math.inf or word in _UNLIMITED):
            return None
        return seconds.check(value)
    return Kind("seconds" + (" or none" if unlimited else ""), check, check)


def size(minimum: int = 0, maximum: int | None = None) -> Kind[int]:
    """Bytes, a whole number."""
    return integer(minimum, maximum, label="bytes")


def choice(*options: str) -> Kind[str]:
    """One of ``options`` (compared lower-cased)."""
    def check(value: Any) -> str:
        word = str(value).strip().lower()
        if word not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return word
    return Kind(" | ".join(options), check, check)


def items(item: Callable[[str], T], *, label: str = "list") -> Kind[tuple[T, ...]]:
    """A comma-separated list; blank items are skipped, each other one goes through ``item``."""
    def parse(text: str) -> tuple[T, ...]:
        return tuple(item(part.strip()) for part in text.split(",") if part.strip())

    def check(value: Any) -> tuple[T, ...]:
        if isinstance(value, str):
            return parse(value)
        return tuple(value)
    return Kind(label, parse, check)


def parsed(parse: Callable[[Any], T], label: str) -> Kind[T]:
    """Text (or an argument) through ``parse``, which raises ``ValueError`` when the value is malformed."""
    return Kind(label, parse, parse)


class Registry:
    """The declared variables, in declaration order; a name is declared once."""

    def __init__(self) -> None:
        self._vars: dict[str, Var[Any]] = {}
        self._lock = threading.Lock()

    def register(self, var: Var[Any]) -> None:
        with self._lock:
            known = self._vars.get(var.name)
            if known is not None and (known.reader, known.doc) != (var.reader, var.doc):
                raise ValueError(f"{var.name} is already declared (read by {known.reader}); import that "
                                 "declaration instead of declaring it again")
            self._vars[var.name] = var  # the same declaration again (a module reloaded) replaces it

    def __iter__(self) -> Any:
        with self._lock:
            return iter(list(self._vars.values()))

    def get(self, name: str) -> Var[Any] | None:
        return self._vars.get(name)


REGISTRY = Registry()

_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(logger: str, name: str, raw: str, why: object, default: object) -> None:
    with _WARNED_LOCK:
        if (name, raw) in _WARNED:
            return
        _WARNED.add((name, raw))
    logging.getLogger(logger).warning("%s=%r is not valid (%s); using the default %r",
                                      name, raw, why, default)


def read(names: Iterable[str], kind: Kind[T], default: Any, *, environ: Mapping[str, str] | None = None,
         logger: str = "ofsre.config") -> Any:
    """The first set variable of ``names`` through ``kind``, else ``default``; a malformed value is logged
    once and gives ``default``. :meth:`Var.from_env` is this with the declared names."""
    env = os.environ if environ is None else environ
    for name in names:
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            return kind.parse(raw)
        except ValueError as exc:  # json.JSONDecodeError and ipaddress errors are ValueErrors too
            _warn_once(logger, name, raw, exc, default)
            return default
    return default


@dataclass(frozen=True)
class Var(Generic[T]):
    """One ``OFSRE_*`` variable: its name, kind, default, who reads it and what it means.

    ``also``: other variables tried, in order, when ``name`` is unset (``OTEL_SERVICE_NAME``).
    ``argument``: the keyword argument (or field) that wins over the variable, named in errors and the table.
    ``shown``: the default as the table shows it, when the value alone says little (a derived default).
    ``logger``: where a malformed value is reported.
    """

    name: str
    kind: Kind[T]
    default: Any
    reader: str
    doc: str
    also: tuple[str, ...] = ()
    argument: str | None = None
    shown: str | None = None
    logger: str = "ofsre.config"
    registry: Registry | None = field(default=REGISTRY, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.startswith("OFSRE_") or not self.name.isupper():
            raise ValueError(f"a variable is named OFSRE_<UPPER_CASE>, not {self.name!r}")
        if not self.reader or not self.doc:
            raise ValueError(f"{self.name}: say who reads it (reader=) and what it means (doc=)")
        if self.registry is not None:
            self.registry.register(self)

    def get(self, value: Any = None, *, environ: Mapping[str, str] | None = None,
            default: Any = _DECLARED) -> Any:
        """``value`` checked (``ValueError`` if it makes no sense) unless it is ``None`` or blank, else
        :meth:`from_env`."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.from_env(environ, default=default)
        return self.check(value)

    def check(self, value: Any) -> T:
        """An explicit value from code through the kind; ``ValueError`` names the argument and the reason."""
        try:
            return self.kind.check(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.argument or self.name}={value!r} is not valid: {exc}") from None

    def from_env(self, environ: Mapping[str, str] | None = None, *, default: Any = _DECLARED) -> Any:
        """The environment's value (``os.environ`` unless ``environ``), else ``default`` (the declared one
        unless given: :data:`UNSET` tells "not set" from a value)."""
        fallback = self.default if default is _DECLARED else default
        return read((self.name, *self.also), self.kind, fallback, environ=environ, logger=self.logger)

    # ------------------------------------------------------------------ the table

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        value: Any = self.default
        if value is None or value == "" or value == () or value == {}:
            return "—"
        if isinstance(value, bool):
            return "`on`" if value else "`off`"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return f"`{value}`"

    def reader_text(self) -> str:
        return self.reader + (f"; argument `{self.argument}=`" if self.argument else "")

    def name_text(self) -> str:
        if not self.also:
            return f"`{self.name}`"
        return f"`{self.name}` (then " + ", ".join(f"`{name}`" for name in self.also) + ")"


def markdown_table(variables: Iterable[Var[Any]] | None = None) -> str:
    """One Markdown table of ``variables`` (default: every declared one), sorted by name."""
    rows = sorted(REGISTRY if variables is None else variables, key=lambda v: v.name)
    lines = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for var in rows:
        cells = (var.name_text(), var.default_text(), var.reader_text(), var.doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"
