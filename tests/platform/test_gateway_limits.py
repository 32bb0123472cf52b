"""TPM counters: fleet-wide in the real Redis at 127.0.0.1:6379, per process otherwise.

Several :class:`RedisWindowCounter` objects stand for several gateway replicas (the end-to-end
test with three real gateway processes is in tests/platform/e2e/test_gateway_fleet_tpm.py).
Each test uses its own key prefix so parallel runs never share counts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import pytest

from ofsre.platform.gateway.limits import RedisWindowCounter, WindowCounter, tpm_counter

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 7
KEY = ("org-a", "GET", "/open-banking/accounts/v2/accounts")


class Clock:
    def __init__(self, now: float = 1_800_000_010.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix():
    p = f"ofsre:test:{uuid.uuid4()}"
    yield p
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(f"{p}:*"):
        r.delete(k)
    r.close()


async def test_three_replicas_sharing_redis_admit_exactly_the_limit(prefix):
    clock = Clock()
    replicas = [RedisWindowCounter(REDIS_URL, 60, clock, prefix=prefix) for _ in range(3)]
    try:
        results = [await replicas[i % 3].hit_async(KEY, LIMIT) for i in range(3 * LIMIT)]
        assert results.count(True) == LIMIT and results[:LIMIT] == [True] * LIMIT
        # Concurrent hits from every replica at once: still exactly the limit for another origin.
        other = ("org-b", *KEY[1:])
        burst = await asyncio.gather(*(replicas[i % 3].hit_async(other, LIMIT) for i in range(5 * LIMIT)))
        assert burst.count(True) == LIMIT
        # The next clock minute starts from zero; the key expires on its own.
        clock.now += 60
        assert await replicas[1].hit_async(KEY, LIMIT)
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(REDIS_URL)
        ttls = [await r.ttl(k) async for k in r.scan_iter(f"{prefix}:*")]
        await r.aclose()
        assert ttls and all(0 < t <= 120 for t in ttls)
    finally:
        for c in replicas:
            await c.aclose()


async def test_per_process_counters_each_admit_the_limit():
    clock = Clock()
    replicas = [WindowCounter(60, clock) for _ in range(3)]
    results = [await replicas[i % 3].hit_async(KEY, LIMIT) for i in range(3 * LIMIT)]
    assert results.count(True) == 3 * LIMIT  # why the fleet needs the shared store


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_an_unreachable_redis_falls_back_to_counting_in_the_process(caplog, prefix):
    counter = RedisWindowCounter(f"redis://:secret@127.0.0.1:{_closed_port()}/0", 60, Clock(), prefix=prefix)
    with caplog.at_level(logging.WARNING, logger="ofsre.platform.gateway"):
        results = [await counter.hit_async(KEY, LIMIT) for _ in range(LIMIT + 2)]
    await counter.aclose()
    assert results == [True] * LIMIT + [False, False]
    warnings = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1 and "counting in this process" in warnings[0]
    assert "secret" not in warnings[0]  # the URL's password is never logged


def test_tpm_counter_follows_the_environment(caplog):
    with caplog.at_level(logging.WARNING, logger="ofsre.platform.gateway"):
        alone = tpm_counter({"OFSRE_GATEWAY_REPLICAS": "1"})
        assert not caplog.records
        fleet = tpm_counter({"OFSRE_GATEWAY_REPLICAS": "3"})
    assert type(alone) is WindowCounter and type(fleet) is WindowCounter and not fleet.shared
    assert "3 gateway replicas and no shared counter store" in caplog.records[0].getMessage()
    shared = tpm_counter({"OFSRE_REDIS_URL": REDIS_URL, "OFSRE_GATEWAY_REPLICAS": "3"})
    assert isinstance(shared, RedisWindowCounter) and shared.shared
    asyncio.run(shared.aclose())
