"""Sizes measured from the step function itself: the carry, one step's VJP residuals, and which residuals vary.

The internal state ``I_k`` of the paper is, in JAX, the residuals of ``jax.vjp`` of one step: the leaves of the
pullback, which is a pytree. Some of them do not depend on the step's inputs at all (closed-over parameters,
constants, values computed from parameters only); those are *invariant*: memjax keeps one copy of them instead
of one per stored step. Others are the step's input ``x`` itself (a matmul's input, kept for the weight's
gradient); memjax reads those back from ``xs`` instead of storing a copy. Both are found by an analysis of the
traced residual computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.extend.core as jex
import numpy as np

__all__ = ["StepSizes", "measure_step", "tree_bytes"]


def tree_bytes(tree) -> int:
    """Bytes of all array leaves of ``tree`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) * np.dtype(leaf.dtype).itemsize
                   for leaf in jax.tree_util.tree_leaves(tree)))


@dataclasses.dataclass(frozen=True)
class StepSizes:
    """What one step stores, in bytes.

    Attributes:
      carry_bytes: one hidden state ``h_k`` (the scan carry).
      carry_avals: shapes and dtypes of the carry's leaves.
      residual_bytes: the residuals of one step's VJP that are stored per step: those that depend on the step's
        inputs, less those that are the step's ``x`` itself (read back from ``xs``).
      invariant_bytes: residuals that depend on neither input (stored once, not per step).
      internal_bytes: one stored internal state: ``residual_bytes + carry_bytes`` (the carry is kept with the
        residuals so that the forward sweep can resume from it).
      pullback_tree: tree structure of the pullback returned by ``jax.vjp``.
      residual_avals: shapes and dtypes of all residual leaves, in pullback order.
      varies: for each residual leaf, whether it depends on the step's carry or input.
      from_x: for each residual leaf, the index of the leaf of ``x`` that it is, or ``-1``.
    """

    carry_bytes: int
    residual_bytes: int
    invariant_bytes: int
    carry_avals: tuple = dataclasses.field(repr=False)
    pullback_tree: Any = dataclasses.field(repr=False)
    residual_avals: tuple = dataclasses.field(repr=False)
    varies: tuple = dataclasses.field(repr=False)
    from_x: tuple = dataclasses.field(repr=False)

    @property
    def internal_bytes(self) -> int:
        return self.residual_bytes + self.carry_bytes

    @property
    def stored(self) -> tuple:
        """For each residual leaf, whether it is stored per step (it varies and is not a leaf of ``x``)."""
        return _stored(self.varies, self.from_x)

    @property
    def variant_avals(self) -> list:
        """Shapes and dtypes of the residual leaves stored per step."""
        return [a for a, keep in zip(self.residual_avals, self.stored) if keep]

    @property
    def alpha(self) -> float:
        """Size of an internal state in units of one hidden state (the paper's alpha)."""
        return self.internal_bytes / max(self.carry_bytes, 1)


def _stored(varies, from_x) -> tuple:
    return tuple(v and j < 0 for v, j in zip(varies, from_x))


def measure_step(step: Callable, consts, carry, x) -> StepSizes:
    """Measure ``step(consts, carry, x) -> (carry, y)`` without running it.

    Args:
      step: the closure-converted step; differentiated with respect to all three arguments.
      consts, carry, x: example arguments (arrays, tracers or ``jax.ShapeDtypeStruct``).
    """

    def residuals(consts, carry, x):
        _, pullback = jax.vjp(step, consts, carry, x)
        return pullback

    pullback = jax.eval_shape(residuals, consts, carry, x)
    leaves, tree = jax.tree_util.tree_flatten(pullback)
    varies, from_x = _depends_on_inputs(
        lambda c, h, z: jax.tree_util.tree_leaves(residuals(c, h, z)), consts, carry, x)
    per_step = [leaf for leaf, keep in zip(leaves, _stored(varies, from_x)) if keep]
    invariant = [leaf for leaf, v in zip(leaves, varies) if not v]
    carry_avals = tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in jax.tree_util.tree_leaves(carry))
    return StepSizes(tree_bytes(carry), tree_bytes(per_step), tree_bytes(invariant), carry_avals, tree,
                     tuple(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves), tuple(varies),
                     tuple(from_x))


def _depends_on_inputs(fn: Callable, consts, carry, x) -> tuple[list[bool], list[int]]:
    """For each output leaf of ``fn(consts, carry, x)``: does it depend on ``carry`` or ``x``, and which leaf of
    ``x`` is it, if it is one unchanged (``-1`` otherwise)?

    A forward dependency analysis over the traced jaxpr; an equation with any dependent input makes all its
    outputs dependent (conservative for equations with sub-jaxprs).
    """
    closed = jax.make_jaxpr(fn)(consts, carry, x)
    jaxpr = closed.jaxpr
    n_consts = len(jax.tree_util.tree_leaves(consts))
    n_carry = len(jax.tree_util.tree_leaves(carry))
    dependent = set(jaxpr.invars[n_consts:])
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex.Literal) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    x_index = {v: j for j, v in enumerate(jaxpr.invars[n_consts + n_carry:])}
    varies = [not isinstance(v, jex.Literal) and v in dependent for v in jaxpr.outvars]
    from_x = [-1 if isinstance(v, jex.Literal) else x_index.get(v, -1) for v in jaxpr.outvars]
    return varies, from_x
