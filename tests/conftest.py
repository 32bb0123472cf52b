"""Fixtures every test folder can use (pytest finds this file for all of tests/)."""

from __future__ import annotations

import pytest

from .http_stub import stub_factory


@pytest.fixture
def http_stub():
    """``http_stub(respond_or_handler_class, **options)``: a started :class:`~tests.http_stub.HttpStub`,
    closed at teardown (see tests/http_stub.py)."""
    yield from stub_factory()
