"""Fixtures of the exporter tests: fake backends, handlers closed after each test, a private logger.

The fake servers and helpers live in ``exporter_fakes.py`` (tests import it as ``.exporter_fakes``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from .exporter_fakes import FakeBackend, make_handler

# --- fixtures ---------------------------------------------------------------------------------

# metric() caches per id(registry); keeping every test registry alive stops a new registry from
# reusing a collected one's id and getting its stale metrics.
_REGISTRIES: list[CollectorRegistry] = []


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    _REGISTRIES.append(reg)
    return reg


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeBackend]]:
    started: list[FakeBackend] = []

    def start(kind: str, **kwargs: Any) -> FakeBackend:
        server = FakeBackend(kind, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def handlers(registry: CollectorRegistry) -> Iterator[Callable[..., logging.Handler]]:
    """``handlers(kind, server, **options)`` -> handler, closed after the test."""
    made: list[logging.Handler] = []

    def make(kind: str, server: FakeBackend, **options: Any) -> logging.Handler:
        handler = make_handler(kind, server, options.pop("registry", registry), **options)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close(timeout=1.0)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger (no propagation to root, so pytest's capture handlers stay out)."""
    log = logging.getLogger(f"test.exporters.{uuid.uuid4().hex[:8]}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()


