"""Typed PRNG keys in a scan carry, for the framework adapters.

:func:`memjax.scan` measures the carry in bytes and stores it in a byte pool, which a typed key
(``jax.random.key``, dtype ``key<fry>``) has no byte size for. The adapters carry random state (Haiku's
internal RNG, a user's key in the carry), so they carry the key's raw data (``jax.random.key_data``) instead
and wrap it back inside the step. Keys that are closed over or scanned over (``xs``) need no such care.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

__all__ = ["keys_to_data", "data_to_keys", "scan_with_keys"]


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
    leaves = [leaf if impl is None else jax.random.wrap_key_data(leaf, impl=impl)
              for leaf, impl in zip(leaves, impls)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def scan_with_keys(scan: Callable, f: Callable, init, xs, **kwargs):
    """``scan(f, init, xs, **kwargs)`` that tolerates typed keys in the carry."""
    data, impls = keys_to_data(init)
    if not any(impl is not None for impl in impls):
        return scan(f, init, xs, **kwargs)

    def step(carry, x):
        carry, y = f(data_to_keys(carry, impls), x)
        return keys_to_data(carry)[0], y

    carry, ys = scan(step, data, xs, **kwargs)
    return data_to_keys(carry, impls), ys
