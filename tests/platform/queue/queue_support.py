"""Constants and helpers shared by the queue tests (imported by name: conftest puts this folder on
sys.path)."""

from __future__ import annotations

import asyncio
import os

PG_URL = os.environ.get("OFSRE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
# Short waits keep the suite fast; no assertion depends on them.
FAST = {"poll_min_seconds": 0.01, "poll_max_seconds": 0.2}


async def take(subscription, timeout: float = 30.0):
    """The next message, awaited in this task (so its consumer scope belongs to this task)."""
    async with asyncio.timeout(timeout):
        return await anext(subscription)
