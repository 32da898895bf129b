"""Pools: the schedule's stack of stored states, one preallocated flat buffer per dtype.

A schedule places hidden states (``s`` quanta each) and internal states (``i`` quanta each) on one stack, at
offsets counted in quanta. Here each dtype ``d`` present in the carry or the residuals gets its own flat
buffer, in which one quantum is ``q_d`` elements: enough that a hidden state's ``d``-leaves fit in ``s``
quanta and an internal state's in ``i``. Items of different kinds thus share the memory exactly as the
schedule says, and values keep their dtype, so forward-mode derivatives (Hessian-vector products through the
backward pass) flow through stored states.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax._plan import pool_quanta

__all__ = ["PoolLayout"]


def _size(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64))


class PoolLayout:
    """Per-dtype pools for a carry and the input-dependent residuals of one step.

    Args:
      carry_avals: shapes and dtypes of the carry's leaves (a hidden state).
      residual_avals: shapes and dtypes of the stored residual leaves; an internal state is these followed by
        the carry's leaves.
      hidden_quanta, internal_quanta: quanta of a hidden and an internal state (``None``: internal states are
        never stored).
    """

    def __init__(self, carry_avals, residual_avals, hidden_quanta: int, internal_quanta: int | None):
        carry_avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in carry_avals]
        residual_avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in residual_avals]
        self.dtypes, self.per_quantum = pool_quanta(carry_avals, residual_avals, hidden_quanta, internal_quanta)
        self.quantum_bytes = int(sum(n * d.itemsize for n, d in zip(self.per_quantum, self.dtypes)))
        self.hidden = Item(self, carry_avals)
        self.internal = Item(self, residual_avals + carry_avals)

    def zeros(self, quanta: int) -> tuple:
        """Empty pools for a stack of ``quanta`` quanta."""
        return tuple(jnp.zeros((quanta * n,), dtype) for n, dtype in zip(self.per_quantum, self.dtypes))

    def carry_starts(self, offsets, in_internal) -> list[np.ndarray]:
        """Per dtype, the elements where carries begin (numpy, for a loop's tables): a hidden state at quantum
        ``offsets``, or, where ``in_internal``, the carry part of the internal state there (its last leaves of
        each dtype, after the residuals)."""
        return [
            np.asarray(offsets, np.int64) * per_quantum + np.where(in_internal, internal - hidden, 0)
            for per_quantum, (_, hidden), (_, internal) in zip(self.per_quantum, self.hidden.parts, self.internal.parts)
        ]

    def starts(self, offsets) -> list[np.ndarray]:
        """Per dtype, the elements where the items at quantum ``offsets`` begin (numpy, for a loop's tables)."""
        return [np.asarray(offsets, np.int64) * per_quantum for per_quantum in self.per_quantum]


class Item:
    """A fixed list of leaves, laid out in the pools: the leaves of each dtype back to back."""

    def __init__(self, layout: PoolLayout, avals):
        self.layout = layout
        self.avals = tuple(avals)
        self.parts = []  # per dtype: [(leaf index, start, size)], and the total element count
        for dtype in layout.dtypes:
            start, part = 0, []
            for index, aval in enumerate(self.avals):
                if np.dtype(aval.dtype) == dtype:
                    part.append((index, start, _size(aval)))
                    start += _size(aval)
            self.parts.append((part, start))

    def _starts(self, offset, starts):
        return starts if starts is not None else [offset * per_quantum for per_quantum in self.layout.per_quantum]

    def store(self, pools: tuple, leaves, offset, starts=None) -> tuple:
        """Write ``leaves`` at quantum ``offset`` (a traced integer) of the pools, or at element ``starts``."""
        out = []
        for pool, start, (part, count) in zip(pools, self._starts(offset, starts), self.parts):
            if count == 0 or count > pool.shape[0]:  # a pool too small is never written by its schedule
                out.append(pool)
                continue
            data = jnp.concatenate([jnp.ravel(leaves[index]).astype(pool.dtype) for index, _, _ in part])
            out.append(jax.lax.dynamic_update_slice(pool, data, (start,)))
        return tuple(out)

    def load(self, pools: tuple, offset, starts=None) -> list:
        """Read the leaves back from quantum ``offset``, or from element ``starts``."""
        leaves = [None] * len(self.avals)
        for pool, begin, (part, count) in zip(pools, self._starts(offset, starts), self.parts):
            if count == 0:
                continue
            if count > pool.shape[0]:  # never read by its schedule; keeps unreachable branches traceable
                data = jnp.zeros((count,), pool.dtype)
            else:
                data = jax.lax.dynamic_slice(pool, (begin,), (count,))
            for index, start, size in part:
                leaves[index] = data[start : start + size].reshape(self.avals[index].shape)
        return leaves
