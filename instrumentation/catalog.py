"""The Open Finance Brasil endpoint catalog: one source for every limit in ofsre.

The data lives in ``catalog.toml`` beside this module (tiers, families, endpoints,
SLO objectives). Everything that needs a limit reads it from here::

    from ofsre.instrumentation.catalog import load_catalog

    catalog = load_catalog()
    entry = catalog.lookup("GET", "/open-banking/accounts/v2/accounts/{accountId}/balances")
    entry.tier.name, entry.p95_seconds, entry.tpm      # ('alta', 1.5, 2500)
    catalog.match("GET", "/open-banking/accounts/v2/accounts/abc-1/balances") is entry   # raw path -> entry

``lookup`` takes a route template, ``match`` a raw request path. Both are dict walks,
cheap enough for the request path. ``load_catalog()`` is cached: the file is read once.
A custom file can be given (``load_catalog(path)`` or ``OFSRE_CATALOG=path``) and is
validated on load; a bad file raises ``CatalogError`` naming the row.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import CATALOG
from .semconv import KNOWN_METHODS

__all__ = ("Catalog", "CatalogError", "Endpoint", "Family", "SLO", "Tier", "RouteMatcher", "load_catalog",
           "DEFAULT_PATH")

DEFAULT_PATH = Path(__file__).with_name("catalog.toml")


class CatalogError(ValueError):
    """The catalog file is malformed; the message names the offending row."""


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    p95_ms: int
    tpm: int
    monthly_limit: int

    @property
    def p95_seconds(self) -> float:
        return self.p95_ms / 1000


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    route: str  # full route template, e.g. /open-banking/accounts/v2/accounts/{accountId}
    api: str
    version: str
    tier: Tier
    tpm: int | None  # per-origin TPM limit, None when the endpoint has none
    slo_excluded: bool = False

    @property
    def p95_ms(self) -> int:
        return self.tier.p95_ms

    @property
    def p95_seconds(self) -> float:
        return self.tier.p95_seconds


@dataclass(frozen=True, slots=True)
class Family:
    """One API family of the catalog: ``consents`` 3.3.1 under ``/open-banking/consents/v3``."""

    api: str
    version: str
    base: str  # no trailing slash


@dataclass(frozen=True, slots=True)
class SLO:
    latency_objective: float
    availability_objective: float
    availability_daily_objective: float
    availability_window_days: int
    latency_window_days: int


class RouteMatcher:
    """Maps raw paths to route templates with a segment trie: literal segments win over
    ``{param}`` segments. O(number of segments) per lookup.

    The trie is also compiled into one regular expression with the same alternatives in the
    same order (at each segment: end of path, then each literal, then the parameter), so
    the regex engine's first match is the trie walk's first match, found in C. Paths with an
    empty segment (``/``, ``/a//b``, a trailing ``//``) are walked.
    """

    _PARAM = "{}"
    _LEAF = "/"   # the key of a template's value: never a segment (segments hold no "/")

    def __init__(self) -> None:
        self._root: dict[str, Any] = {}
        self._compiled: tuple[re.Pattern[str], dict[str, Any]] | None = None   # built on the first match

    def add(self, template: str, value: Any) -> None:
        node = self._root
        for seg in _segments(template):
            key = self._PARAM if seg.startswith("{") and seg.endswith("}") else seg
            node = node.setdefault(key, {})
        node.setdefault(self._LEAF, value)  # first registration wins
        self._compiled = None

    def match(self, path: str) -> Any | None:
        pattern, values = self._compiled or self._compile()
        found = pattern.match(path)   # a trailing "/" and a query string are part of the expression
        if found is not None and found.lastgroup is not None:   # (a match always ends in a leaf's group)
            return values[found.lastgroup]
        if "//" in path or not path.startswith("/") or path == "/" or path.startswith("/?"):
            return self._walk(self._root, _segments(path), 0)   # an empty segment: the trie decides
        return None

    def _compile(self) -> tuple[re.Pattern[str], dict[str, Any]]:
        values: dict[str, Any] = {}

        def pattern(node: dict[str, Any]) -> str:
            alternatives = []
            if self._LEAF in node:
                name = f"_{len(values)}"
                values[name] = node[self._LEAF]
                alternatives.append(f"(?P<{name}>)/?(?:\\?|\\Z)")
            # Left out: "" (an empty segment: such paths are walked) and a segment holding "?"
            # (the query starts there: no path reaches it).
            alternatives += [f"/{re.escape(key)}(?:{pattern(child)})" for key, child in node.items()
                             if key not in ("", self._PARAM, self._LEAF) and "?" not in key]
            if self._PARAM in node:
                alternatives.append(f"/[^/?]+(?:{pattern(node[self._PARAM])})")
            return "|".join(alternatives) or "(?!)"

        self._compiled = (re.compile(f"(?:{pattern(self._root)})"), values)
        return self._compiled

    def _walk(self, node: dict[str, Any], segs: list[str], i: int) -> Any | None:
        if i == len(segs):
            return node.get(self._LEAF)
        seg = segs[i]
        child = node.get(seg)
        if child is not None and seg != self._PARAM:
            found = self._walk(child, segs, i + 1)
            if found is not None:
                return found
        child = node.get(self._PARAM)
        if child is not None and seg:
            return self._walk(child, segs, i + 1)
        return None


def _segments(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.split("/")[1:] if path.startswith("/") else path.split("/")


class Catalog:
    """The loaded catalog. Iterate it for every :class:`Endpoint`."""

    def __init__(self, tiers: dict[str, Tier], endpoints: list[Endpoint], slo: SLO, raw: dict[str, Any],
                 families: dict[str, Family] | None = None):
        self.tiers = tiers
        self.families: dict[str, Family] = dict(families or {})
        self.endpoints = tuple(endpoints)
        self.slo = slo
        self.ecosystem: dict[str, int] = dict(raw.get("ecosystem", {}))
        self._qca = raw.get("qca_tpm", {})
        self._by_key = {(e.method, e.route): e for e in endpoints}
        self._matchers: dict[str, RouteMatcher] = {}
        for e in endpoints:
            self._matchers.setdefault(e.method, RouteMatcher()).add(e.route, e)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def lookup(self, method: str, route: str) -> Endpoint | None:
        """The entry for a route *template* (``/…/accounts/{accountId}``), or None."""
        return self._by_key.get((method.upper(), route))

    def match(self, method: str, path: str) -> Endpoint | None:
        """The entry whose template matches a raw request *path*, or None."""
        m = self._matchers.get(method.upper())
        return m.match(path) if m is not None else None

    def allowed_methods(self, path: str) -> tuple[str, ...]:
        """The methods whose templates match a raw ``path`` (empty: the catalog has no such route)."""
        return tuple(sorted(method for method, m in self._matchers.items() if m.match(path) is not None))

    def family(self, api: str) -> Family:
        """The family named ``api``; ``KeyError`` naming the known ones when there is none."""
        try:
            return self.families[api]
        except KeyError:
            known = ", ".join(self.families)
            raise KeyError(f"no API family {api!r} in the catalog (known: {known})") from None

    def alta_tpm_for_active_consents(self, active_consents: int) -> int:
        """Alta-tier TPM for the number of active consents between a receiver/transmitter pair."""
        steps = self._qca.get("steps", [])
        for max_consents, tpm in steps:
            if active_consents <= max_consents:
                return int(tpm)
        last_max, last_tpm = steps[-1]
        extra = -(-(active_consents - last_max) // self._qca["step_consents"])  # ceil
        return int(last_tpm + extra * self._qca["step_tpm"])


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise CatalogError(f"{where}: missing '{key}'")
    return d[key]


def parse_catalog(raw: dict[str, Any], source: str = "<catalog>") -> Catalog:
    tiers: dict[str, Tier] = {}
    for name, t in _require(raw, "tiers", source).items():
        where = f"{source}: tier {name!r}"
        try:
            tiers[name] = Tier(name, int(_require(t, "p95_ms", where)), int(_require(t, "tpm", where)),
                               int(t.get("monthly_limit", 0)))
        except (TypeError, ValueError) as exc:
            raise CatalogError(f"{where}: {exc}") from None
        if tiers[name].p95_ms <= 0:
            raise CatalogError(f"{where}: p95_ms must be positive")
    endpoints: list[Endpoint] = []
    families: dict[str, Family] = {}
    seen: set[tuple[str, str]] = set()
    for i, fam in enumerate(_require(raw, "family", source)):
        api = _require(fam, "api", f"{source}: family #{i + 1}")
        where = f"{source}: family {api!r}"
        base = _require(fam, "base", where).rstrip("/")
        version = str(_require(fam, "version", where))
        fam_tpm = fam.get("tpm", "tier")
        if api in families:
            raise CatalogError(f"{where}: duplicate family")
        families[api] = Family(api, version, base)
        for row in _require(fam, "endpoints", where):
            if not isinstance(row, list) or len(row) not in (3, 4):
                raise CatalogError(f"{where}: endpoint row {row!r} must be [method, path, tier(, tpm)]")
            method, path, tier_name = (str(x) for x in row[:3])
            rwhere = f"{where}: {method} {path}"
            if method.upper() != method or method not in KNOWN_METHODS:
                raise CatalogError(f"{rwhere}: unknown method {method!r}")
            if not path.startswith("/"):
                raise CatalogError(f"{rwhere}: path must start with '/'")
            if tier_name not in tiers:
                raise CatalogError(f"{rwhere}: unknown tier {tier_name!r} (known: {', '.join(tiers)})")
            tier = tiers[tier_name]
            tpm_spec = row[3] if len(row) == 4 else fam_tpm
            if tpm_spec == "tier":
                tpm: int | None = tier.tpm
            elif tpm_spec == "none":
                tpm = None
            elif isinstance(tpm_spec, int) and tpm_spec > 0:
                tpm = tpm_spec
            else:
                raise CatalogError(f"{rwhere}: tpm must be 'tier', 'none' or a positive integer, "
                                   f"not {tpm_spec!r}")
            route = base + path
            if (method, route) in seen:
                raise CatalogError(f"{rwhere}: duplicate endpoint")
            seen.add((method, route))
            endpoints.append(Endpoint(method, route, api, version, tier, tpm,
                                      bool(fam.get("slo_excluded", False))))
    s = _require(raw, "slo", source)
    try:
        slo = SLO(float(s["latency_objective"]), float(s["availability_objective"]),
                  float(s["availability_daily_objective"]), int(s["availability_window_days"]),
                  int(s["latency_window_days"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{source}: [slo]: {exc!r}") from None
    for name in ("latency_objective", "availability_objective", "availability_daily_objective"):
        if not 0 < getattr(slo, name) < 1:
            raise CatalogError(f"{source}: [slo] {name} must be between 0 and 1")
    return Catalog(tiers, endpoints, slo, raw, families)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Catalog:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    return parse_catalog(raw, path)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog from ``path``, else ``$OFSRE_CATALOG``, else the bundled file. Cached."""
    chosen = CATALOG.get(path) or DEFAULT_PATH
    return _load(str(Path(chosen).resolve()))


def regulatory_buckets(catalog: Catalog | None = None) -> tuple[float, ...]:
    """Histogram buckets (seconds) that contain every tier's p95 limit exactly."""
    catalog = catalog or load_catalog()
    base = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 15.0}
    base.update(t.p95_seconds for t in catalog.tiers.values())
    base.add(float(catalog.ecosystem.get("client_timeout_s", 15)))
    return tuple(sorted(base))


