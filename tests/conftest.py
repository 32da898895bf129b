"""Fixtures shared by the test files; plain builders and checks are in tests/helpers.py."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """float64 enabled for the test (its arrays, the transformations it runs and the checks it makes)."""
    with jax.enable_x64(True):
        yield
