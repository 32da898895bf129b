"""A byte pool: stored hidden and internal states of any dtypes packed into one preallocated ``uint8`` buffer.

One buffer (rather than one stack per kind) holds the schedule's stack exactly: hidden and internal states of
different sizes share it at the offsets the schedule assigns, so the bytes allocated equal the schedule's peak,
never the sum of per-kind peaks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Layout"]


def _leaf_bytes(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


def _to_bytes(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    elif jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    if x.dtype.itemsize > 1:
        x = jax.lax.bitcast_convert_type(x, jnp.uint8)
    elif x.dtype != jnp.uint8:
        x = jax.lax.bitcast_convert_type(x, jnp.uint8)
    return x.reshape(-1)


def _from_bytes(raw: jax.Array, aval) -> jax.Array:
    dtype = np.dtype(aval.dtype)
    if dtype == np.bool_:
        return raw.reshape(aval.shape) != 0
    if np.issubdtype(dtype, np.complexfloating):
        part = np.dtype(np.float32 if dtype == np.complex64 else np.float64)
        pair = _from_bytes(raw, jax.ShapeDtypeStruct((*aval.shape, 2), part))
        return jax.lax.complex(pair[..., 0], pair[..., 1])
    if dtype.itemsize > 1:
        raw = raw.reshape(*aval.shape, dtype.itemsize)
    else:
        raw = raw.reshape(aval.shape)
    return jax.lax.bitcast_convert_type(raw, dtype)


class Layout:
    """How a fixed list of array leaves is laid out as consecutive bytes in the pool."""

    def __init__(self, avals):
        self.avals = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals)
        sizes = [_leaf_bytes(a) for a in self.avals]
        self.starts = tuple(int(s) for s in np.cumsum([0] + sizes)[:-1])
        self.nbytes = int(sum(sizes))

    def store(self, pool: jax.Array, leaves, offset) -> jax.Array:
        """Write ``leaves`` into ``pool`` at byte ``offset`` (a traced integer)."""
        if not self.avals or self.nbytes > pool.shape[0]:  # a pool too small is never written by its schedule
            return pool
        data = jnp.concatenate([_to_bytes(leaf) for leaf in leaves])
        return jax.lax.dynamic_update_slice(pool, data, (offset,))

    def load(self, pool: jax.Array, offset) -> list:
        """Read the leaves back from byte ``offset``."""
        if not self.avals:
            return []
        if self.nbytes > pool.shape[0]:  # never read by its schedule; keeps branches that cannot run traceable
            return [jnp.zeros(aval.shape, aval.dtype) for aval in self.avals]
        raw = jax.lax.dynamic_slice(pool, (offset,), (self.nbytes,))
        return [_from_bytes(raw[start: start + _leaf_bytes(aval)], aval)
                for start, aval in zip(self.starts, self.avals)]
