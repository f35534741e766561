"""Fixtures for tests that run coldmail as real processes."""

from __future__ import annotations

import pytest

from tests.support.http import Http


@pytest.fixture
def http(port):
    return Http(f"http://127.0.0.1:{port}")
