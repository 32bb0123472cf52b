"""Fixtures for the runtime tests: the stand-in service command, clean-up of deployments, wait_for."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

STANDIN = Path(__file__).with_name("standin_service.py")


@pytest.fixture
def standin_command() -> list[str]:
    """The command line of the stand-in service, in the runner's shape."""
    return [sys.executable, str(STANDIN), "{service}", "--host", "{host}", "--port", "{port}"]


@pytest.fixture
def deployments():
    """A list the test appends its deployments to; each is stopped afterwards, even on failure."""
    created: list = []
    yield created
    for dep in created:
        dep.stop(timeout=15)


def _wait_for(predicate, timeout: float = 60.0, poll: float = 0.1):
    """The first truthy value of ``predicate()``; fails the test after ``timeout`` seconds.

    Only a bound on how long to wait for something that must happen, never a timing assertion.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def wait_for():
    return _wait_for
