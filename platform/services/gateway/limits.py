"""Traffic limits of the gateway, counted in fixed clock windows (openfinance.md §3).

* :class:`WindowCounter` with 60 s windows is the per-origin **TPM** limit: the count of an
  (origin, endpoint) pair in the current clock minute (:00.000–:59.999); a request is refused
  (429) exactly when its count, itself included, exceeds the limit. The limits come from the
  catalog (``Catalog.match(method, path).tpm``); endpoints without one are not counted.
* The same class with 1 s windows is the global **TPS** capacity (529 past it).

Counts live in this process: with several gateway replicas each enforces the limit on the
traffic it sees (a shared counter store would be needed for an exact fleet-wide limit).
Memory is bounded by the keys seen within one window: the table is replaced when the
window changes. No lock is needed: the gateway runs on one event loop, and ``hit`` does not
await.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = ["WindowCounter"]


class WindowCounter:
    """Counts hits per key in fixed windows of ``window_s`` seconds of the wall clock."""

    def __init__(self, window_s: int, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._window = -1
        self._counts: dict[Hashable, int] = {}

    def hit(self, key: Hashable, limit: int) -> bool:
        """Count one hit of ``key``; False when the window's count now exceeds ``limit``."""
        window = int(self._clock() // self.window_s)
        if window != self._window:
            self._window, self._counts = window, {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count <= limit

    def seconds_left(self) -> int:
        """Whole seconds until the current window ends (for ``Retry-After``), at least 1."""
        now = self._clock()
        return max(1, int(self.window_s - now % self.window_s + 0.999))
