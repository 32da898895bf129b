"""Typed PRNG keys in a scan carry.

:func:`memjax.scan` measures the carry in bytes and stores it in byte pools, which a typed key
(``jax.random.key``, dtype ``key<fry>``) has no byte size for. So the scan carries the key's raw data
(``jax.random.key_data``, ``uint32``) instead and wraps it back inside the step; the caller sees keys. Keys that
are closed over or scanned over (``xs``) need no such care.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["keys_to_data", "data_to_keys", "carry_keys_as_data"]


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def keys_to_data(tree) -> tuple[Any, tuple]:
    """Replace typed-key leaves by their raw ``uint32`` data; returns ``(tree, impls)`` (``None`` for non-keys)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    impls = tuple(jax.random.key_impl(leaf) if _is_key(leaf) else None for leaf in leaves)
    leaves = [jax.random.key_data(leaf) if impl is not None else leaf for leaf, impl in zip(leaves, impls)]
    return jax.tree_util.tree_unflatten(treedef, leaves), impls


def data_to_keys(tree, impls: tuple):
    """Inverse of :func:`keys_to_data`."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    leaves = [leaf if impl is None else jax.random.wrap_key_data(leaf, impl=impl) for leaf, impl in zip(leaves, impls)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def carry_keys_as_data(f: Callable, init) -> tuple[Callable, Any, tuple | None]:
    """``(f, init, impls)`` with typed keys in the carry replaced by their data, ``impls`` ``None`` if there are
    none; the carry that the scan returns goes back through :func:`data_to_keys` with ``impls``."""
    data, impls = keys_to_data(init)
    if not any(impl is not None for impl in impls):
        return f, init, None

    def step(carry, x):
        carry, y = f(data_to_keys(carry, impls), x)
        return keys_to_data(carry)[0], y

    return step, data, impls
