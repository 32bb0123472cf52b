"""Traffic limits of the gateway, counted in fixed clock windows (openfinance.md §3).

* :class:`WindowCounter` with 60 s windows is the per-origin **TPM** limit: the count of an
  (origin, endpoint) pair in the current clock minute (:00.000–:59.999); a request is refused
  (429) exactly when its count, itself included, exceeds the limit. The limits come from the
  catalog (``Catalog.match(method, path).tpm``); endpoints without one are not counted.
* The same class with 1 s windows is the global **TPS** capacity (529 past it), per replica:
  each gateway process protects its own capacity.

**Fleet-wide TPM.** The regulator counts an origin's calls to the institution, whichever
gateway replica served them. With ``OFSRE_REDIS_URL`` set, :func:`tpm_counter` returns a
:class:`RedisWindowCounter`: every replica increments one Redis key per (window, origin,
endpoint) — one round trip, an atomic ``INCR`` plus ``EXPIRE`` in a Lua script — so N
replicas together admit exactly the catalog's limit. Windows come from the gateway's wall
clock (replicas are NTP-synchronised; a skew of a few ms only moves calls at the boundary).
If Redis does not answer within ``OFSRE_REDIS_TIMEOUT_MS`` (default 250 ms; a
new connection may take up to 1 s) the call is
counted in the process instead (fail open, logged once per outage): a limiter outage must
not turn into a platform outage, and the per-process count still bounds each replica.
Without Redis each process counts alone; when ``OFSRE_GATEWAY_REPLICAS`` (the most gateway
replicas that may run, e.g. the HPA's ``maxReplicas``) is above 1, :func:`tpm_counter` warns
at start-up that N replicas admit up to N × the limit. ``OFSRE_REDIS_KEY_PREFIX`` (default
``ofsre:gateway:tpm``) keeps platforms sharing one Redis apart.

Both counters offer ``await counter.hit_async(key, limit)``; :class:`WindowCounter` also has
the synchronous ``hit``. Memory is bounded by the keys of one window (the local table is
replaced when the window changes; Redis keys expire a window after theirs ends).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping

from ..settings import GATEWAY_REPLICAS, REDIS_KEY_PREFIX, REDIS_TIMEOUT_MS, REDIS_URL

__all__ = ["WindowCounter", "RedisWindowCounter", "tpm_counter", "REDIS_URL_ENV", "REPLICAS_ENV"]

_log = logging.getLogger("ofsre.platform.gateway")

# The variables are declared in ofsre.platform.settings (the README's table); read through them here.
REDIS_URL_ENV, REPLICAS_ENV = REDIS_URL.name, GATEWAY_REPLICAS.name
_POOL_SIZE = 16

# KEYS[1] = the window's key, ARGV[1] = its time to live (s). One round trip, atomic.
_INCR_EXPIRE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


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

    async def hit_async(self, key: Hashable, limit: int) -> bool:
        """:meth:`hit`, awaitable like :meth:`RedisWindowCounter.hit_async`."""
        return self.hit(key, limit)

    def seconds_left(self) -> int:
        """Whole seconds until the current window ends (for ``Retry-After``), at least 1."""
        now = self._clock()
        return max(1, int(self.window_s - now % self.window_s + 0.999))

    async def aclose(self) -> None:
        """Nothing to release (the interface of :class:`RedisWindowCounter`)."""

    @property
    def shared(self) -> bool:
        return False


class RedisWindowCounter(WindowCounter):
    """The same fixed windows, counted in Redis so every gateway replica shares them."""

    def __init__(self, url: str, window_s: int, clock: Callable[[], float] = time.time, *,
                 timeout_s: float = 0.25, prefix: str = "ofsre:gateway:tpm") -> None:
        super().__init__(window_s, clock)
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - the platform extra installs it
            raise RuntimeError(f"{REDIS_URL_ENV} is set but the 'redis' package is missing "
                               "(pip install 'ofsre[platform]')") from exc
        self.url = url
        self.prefix = prefix
        # A small blocking pool: a burst waits for one of a few long-lived connections instead
        # of opening one connection per concurrent request (and timing out connecting).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=_POOL_SIZE, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=max(timeout_s, 1.0))
        self._redis = aioredis.Redis(connection_pool=pool)
        self._incr = self._redis.register_script(_INCR_EXPIRE)
        self._errors = (aioredis.RedisError, OSError, TimeoutError)
        self._degraded = False

    def _key(self, window: int, key: Hashable) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return f"{self.prefix}:{self.window_s}:{window}:" + "|".join(str(p) for p in parts)

    async def hit_async(self, key: Hashable, limit: int) -> bool:
        """Count one hit of ``key`` fleet-wide; False when the window's count exceeds ``limit``."""
        window = int(self._clock() // self.window_s)
        try:
            count = int(await self._incr(keys=[self._key(window, key)], args=[2 * self.window_s]))
        except self._errors as exc:
            if not self._degraded:
                self._degraded = True
                _log.warning("TPM counter: Redis at %s failed (%s); counting in this process until it "
                             "answers", _redact(self.url), exc)
            return self.hit(key, limit)
        if self._degraded:
            self._degraded = False
            _log.warning("TPM counter: Redis answers again; fleet-wide counting resumed")
        return count <= limit

    async def aclose(self) -> None:
        await self._redis.aclose()

    @property
    def shared(self) -> bool:
        return True


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


def tpm_counter(environ: Mapping[str, str] | None = None,
                clock: Callable[[], float] = time.time) -> WindowCounter:
    """The TPM counter the environment asks for (see the module docstring)."""
    url = REDIS_URL.from_env(environ)
    if url:
        timeout_ms: float = REDIS_TIMEOUT_MS.from_env(environ)  # a malformed value: logged, 250 ms
        _log.info("TPM limits counted fleet-wide in Redis at %s", _redact(url))
        # The prefix keeps platforms (or test runs) sharing one Redis apart.
        prefix: str = REDIS_KEY_PREFIX.from_env(environ)
        return RedisWindowCounter(url, 60, clock, timeout_s=timeout_ms / 1000, prefix=prefix)
    replicas: int = GATEWAY_REPLICAS.from_env(environ)
    if replicas > 1:
        _log.warning("%d gateway replicas and no shared counter store (%s): each replica counts TPM limits "
                     "alone, so together they admit up to %d x the catalog's limit; set %s for "
                     "fleet-wide limits",
                     replicas, REDIS_URL_ENV, replicas, REDIS_URL_ENV)
    return WindowCounter(60, clock)
