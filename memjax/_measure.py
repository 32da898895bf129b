"""Sizes measured from the step function itself: the carry, one step's VJP residuals, and which residuals vary;
and the seconds of its actions (:func:`estimate_step_costs`, for the time model of :mod:`memjax._cost`).

The internal state ``I_k`` of the paper is, in JAX, the residuals of ``jax.vjp`` of one step: the leaves of the
pullback, which is a pytree. Some of them do not depend on the step's inputs at all (closed-over parameters,
constants, values computed from parameters only); those are *invariant*: memjax keeps one copy of them instead
of one per stored step. Others are the step's input ``x`` itself (a matmul's input, kept for the weight's
gradient); memjax reads those back from ``xs`` instead of storing a copy. Both are found by an analysis of the
traced residual computation.

The order of the pullback's leaves is that of one trace: JAX may order the residuals of the same step
differently when it is traced again elsewhere (a ``lax.cond`` in the step orders a carry it forwards as a
residual by how the carry was produced). So the step's VJP is traced once, here, into a jaxpr
(:meth:`StepSizes.vjp`), and every evaluation of it, when storing an internal state as when back-propagating
from one, gives its leaves in the order that :attr:`StepSizes.pullback_tree` expects.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import numpy as np

from memjax._cost import StepCosts

__all__ = ["StepSizes", "estimate_step_costs", "measure_step", "tree_bytes"]


def tree_bytes(tree) -> int:
    """Bytes of all array leaves of ``tree`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return int(
        sum(
            np.prod(leaf.shape, dtype=np.int64) * np.dtype(leaf.dtype).itemsize
            for leaf in jax.tree_util.tree_leaves(tree)
        )
    )


@dataclasses.dataclass(frozen=True)
class StepSizes:
    """What one step stores, in bytes.

    Attributes:
      carry_bytes: one hidden state ``h_k`` (the scan carry).
      carry_avals: shapes and dtypes of the carry's leaves.
      residual_bytes: the residuals of one step's VJP that are stored per step: those that depend on the step's
        inputs, less those that are the step's ``x`` itself (read back from ``xs``) or a leaf of the carry it
        returns (read back from the internal state's own carry, as ``tanh``'s output is).
      invariant_bytes: residuals that depend on neither input (stored once, not per step).
      internal_bytes: one stored internal state: ``residual_bytes + carry_bytes`` (the carry is kept with the
        residuals so that the forward sweep can resume from it).
      pullback_tree: tree structure of the pullback returned by ``jax.vjp``.
      residual_avals: shapes and dtypes of all residual leaves, in pullback order.
      varies: for each residual leaf, whether it depends on the step's carry or input.
      from_x: for each residual leaf, the index of the leaf of ``x`` that it is, or ``-1``.
      from_carry: for each residual leaf, the index of the leaf of the returned carry that it is, or ``-1``.
      vjp_jaxpr: the step's forward pass under ``jax.vjp``, traced once: it maps the leaves of
        ``(consts, carry, x)`` to those of ``(carry, y)`` followed by the residual leaves.
      out_tree: tree structure of ``(carry, y)``.
    """

    carry_bytes: int
    residual_bytes: int
    invariant_bytes: int
    carry_avals: tuple = dataclasses.field(repr=False)
    pullback_tree: Any = dataclasses.field(repr=False)
    residual_avals: tuple = dataclasses.field(repr=False)
    varies: tuple = dataclasses.field(repr=False)
    from_x: tuple = dataclasses.field(repr=False)
    from_carry: tuple = dataclasses.field(repr=False)
    vjp_jaxpr: Any = dataclasses.field(default=None, repr=False, compare=False)
    out_tree: Any = dataclasses.field(default=None, repr=False, compare=False)

    def vjp(self, consts, carry, x):
        """``((carry, y), residual leaves)`` of one step, the leaves in :attr:`pullback_tree`'s order."""
        flat = jex.jaxpr_as_fun(self.vjp_jaxpr)(*jax.tree_util.tree_leaves((consts, carry, x)))
        n = self.out_tree.num_leaves
        return jax.tree_util.tree_unflatten(self.out_tree, flat[:n]), list(flat[n:])

    @property
    def internal_bytes(self) -> int:
        return self.residual_bytes + self.carry_bytes

    @property
    def stored(self) -> tuple:
        """For each residual leaf, whether it is stored per step (it varies and is neither a leaf of ``x`` nor
        one of the returned carry)."""
        return _stored(self.varies, self.from_x, self.from_carry)

    @property
    def variant_avals(self) -> list:
        """Shapes and dtypes of the residual leaves stored per step."""
        return [a for a, keep in zip(self.residual_avals, self.stored) if keep]

    @property
    def alpha(self) -> float:
        """Size of an internal state in units of one hidden state (the paper's alpha)."""
        return self.internal_bytes / max(self.carry_bytes, 1)


def _stored(varies, from_x, from_carry) -> tuple:
    return tuple(v and j < 0 and c < 0 for v, j, c in zip(varies, from_x, from_carry))


def measure_step(step: Callable, consts, carry, x) -> StepSizes:
    """Measure ``step(consts, carry, x) -> (carry, y)`` without running it.

    Args:
      step: the closure-converted step; differentiated with respect to all three arguments.
      consts, carry, x: example arguments (arrays, tracers or ``jax.ShapeDtypeStruct``).
    """

    def forward(consts, carry, x):
        return jax.vjp(step, consts, carry, x)

    closed, (out, pullback) = jax.make_jaxpr(forward, return_shape=True)(consts, carry, x)
    out_tree = jax.tree_util.tree_structure(out)
    leaves, tree = jax.tree_util.tree_flatten(pullback)
    n_args = len(jax.tree_util.tree_leaves((consts, carry)))
    n_carry = len(jax.tree_util.tree_leaves(carry))
    varies, from_x, from_carry = _depends_on_inputs(
        closed.jaxpr, len(jax.tree_util.tree_leaves(consts)), n_args, n_carry, out_tree.num_leaves
    )
    per_step = [leaf for leaf, keep in zip(leaves, _stored(varies, from_x, from_carry)) if keep]
    invariant = [leaf for leaf, v in zip(leaves, varies) if not v]
    carry_avals = tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in jax.tree_util.tree_leaves(carry))
    return StepSizes(
        tree_bytes(carry),
        tree_bytes(per_step),
        tree_bytes(invariant),
        carry_avals,
        tree,
        tuple(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves),
        tuple(varies),
        tuple(from_x),
        tuple(from_carry),
        closed,
        out_tree,
    )


def _depends_on_inputs(jaxpr, n_consts: int, n_args: int, n_carry: int, n_out: int) -> tuple[list, list, list]:
    """For each residual output of ``jaxpr`` (those after the first ``n_out``): does it depend on the carry or
    ``x`` (the inputs after the first ``n_consts``), which leaf of ``x`` (the inputs after the first ``n_args``)
    is it, if it is one unchanged, and which leaf of the returned carry (the first ``n_carry`` outputs) is it
    (``-1`` for none)?

    A forward dependency analysis; an equation with any dependent input makes all its outputs dependent
    (conservative for equations with sub-jaxprs).
    """
    dependent = set(jaxpr.invars[n_consts:])
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex.Literal) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    x_index = {v: j for j, v in enumerate(jaxpr.invars[n_args:])}
    outvars = jaxpr.outvars[n_out:]
    varies = [not isinstance(v, jex.Literal) and v in dependent for v in outvars]
    from_x = [-1 if isinstance(v, jex.Literal) else x_index.get(v, -1) for v in outvars]
    carry_index = {
        v: j for j, v in reversed(list(enumerate(jaxpr.outvars[:n_carry]))) if not isinstance(v, jex.Literal)
    }
    from_carry = [
        -1 if isinstance(v, jex.Literal) or j >= 0 else carry_index.get(v, -1) for v, j in zip(outvars, from_x)
    ]
    return varies, from_x, from_carry


# Nominal throughput per backend: (flop/s, byte/s, seconds per executor row). Only ratios matter for choosing.
_NOMINAL = {"cpu": (5e10, 1e10, 2e-6), "gpu": (5e13, 2e12, 1e-5), "tpu": (1e14, 1e12, 1e-5)}


def estimate_step_costs(step, consts, carry, x, *, calibrate: bool = False, repeats: int = 5) -> StepCosts:
    """Per-action costs of ``step(consts, carry, x) -> (carry, y)``.

    Args:
      step: the closure-converted step.
      consts, carry, x: example arguments (concrete arrays when ``calibrate``).
      calibrate: time the compiled step, VJP and pullback (median of ``repeats``) instead of estimating from
        XLA's cost analysis.

    Returns:
      The seconds of each action, a :class:`memjax.planning.StepCosts` for :func:`memjax.planning.predict_seconds`.
    """
    backend = jax.default_backend()
    flops_per_s, bytes_per_s, per_action = _NOMINAL.get(backend, _NOMINAL["cpu"])

    def forward(consts, carry, x):
        return step(consts, carry, x)

    def forward_vjp(consts, carry, x):
        out, pullback = jax.vjp(step, consts, carry, x)
        return out, jax.tree_util.tree_leaves(pullback)

    def backward(consts, carry, x, ct):
        _, pullback = jax.vjp(step, consts, carry, x)
        return pullback(ct)

    ct = jax.eval_shape(step, consts, carry, x)
    ct = jax.tree_util.tree_map(
        lambda a: (
            np.ones(a.shape, a.dtype) if np.issubdtype(a.dtype, np.inexact) else np.zeros(a.shape, jax.dtypes.float0)
        ),
        ct,
    )
    calls = [(forward, (consts, carry, x)), (forward_vjp, (consts, carry, x)), (backward, (consts, carry, x, ct))]
    seconds = []
    for fn, args in calls:
        compiled = jax.jit(fn).lower(*args).compile()
        if calibrate:
            jax.block_until_ready(compiled(*args))
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                times.append(time.perf_counter() - start)
            seconds.append(float(np.median(times)))
        else:
            analysis = compiled.cost_analysis()
            analysis = analysis[0] if isinstance(analysis, (list, tuple)) else (analysis or {})
            flops = float(analysis.get("flops", 0.0))
            moved = float(analysis.get("bytes accessed", 0.0))
            seconds.append(flops / flops_per_s + moved / bytes_per_s)
    fwd, fwd_vjp, bwd = seconds
    # A pullback recomputes nothing: what the VJP forward costs beyond the forward is residual traffic.
    return StepCosts(
        forward=fwd,
        forward_vjp=max(fwd_vjp, fwd),
        backward=max(bwd - fwd_vjp, 0.0),
        byte=2.0 / bytes_per_s,
        action=per_action,
    )
