"""The one registry of memjax's process-wide caches (pure Python): :func:`clear_caches` empties all of them.

Every module that keeps a cache registers how to empty it here, at import: ``register(_TABLES.clear)`` for a dict,
or ``@cached(maxsize=64)`` in place of ``functools.lru_cache``. Tests and benchmarks that need a cold start call
``memjax.clear_caches()`` instead of reaching into private dicts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

__all__ = ["cached", "clear_caches", "register"]

_CLEARERS: list[Callable[[], None]] = []


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Register ``clear``, a function of no arguments that empties one cache; returns it."""
    _CLEARERS.append(clear)
    return clear


def cached(maxsize: int | None = 128):
    """``functools.lru_cache(maxsize)``, registered so that :func:`clear_caches` empties it."""

    def decorate(function):
        wrapper = functools.lru_cache(maxsize=maxsize)(function)
        register(wrapper.cache_clear)
        return wrapper

    return decorate


def clear_caches() -> None:
    """Empty every cache memjax keeps: solved tables and policies, schedules and plans.

    JAX's own caches (traced and compiled functions) are not touched: ``jax.clear_caches()`` empties those.
    """
    for clear in _CLEARERS:
        clear()
