"""memjax.scan as a JAX primitive, with one rule per transformation.

``jax.custom_vjp`` gives a function a reverse-mode rule but forbids forward mode. A primitive with rules for
each transformation has both, as ``lax.scan`` and ``jax.checkpoint`` do; JAX offers this through
``jax.experimental.hijax.HiPrim`` (named ``VJPHiPrimitive`` in jax 0.10). The rules of :class:`ScanPrimitive`:

==============================  ==================================================================================
``expand``                      lowering, and every transformation without a rule: ``jax.lax.scan`` of the step
``vjp_fwd`` / ``vjp_bwd_retval``  reverse mode (``jax.grad``, ``jax.vjp``): the schedule's forward and backward
                                sweeps (:class:`memjax._executor.Executor`); the backward sweep has static trip
                                counts only, so it can be differentiated again (second order)
``jvp``                         forward mode: ``lax.scan``'s own JVP, one sweep carrying primal and tangent
``lin`` / ``linearized``        ``jax.linearize``: keeps only the inputs, and each application of the linear map
                                is one tangent sweep that recomputes the primal (nothing per step is stored)
``batch_dim_rule``              ``jax.vmap``: every rule applied per mapped element (the budget is per element)
==============================  ==================================================================================
"""

from __future__ import annotations

import jax
from jax.experimental.hijax import Zero

try:  # jax >= 0.11 names the base class HiPrim; jax 0.10 named it VJPHiPrimitive (the same rules)
    from jax.experimental.hijax import HiPrim
except ImportError:  # pragma: no cover - jax 0.10
    from jax.experimental.hijax import VJPHiPrimitive as HiPrim

from memjax._executor import Executor, zero_cotangent

__all__ = ["ScanPrimitive"]


@jax.tree_util.register_static
class _Perturbed:
    """Which inputs are differentiated, carried from the forward rule to the backward rule as static data."""

    def __init__(self, flags):
        self.flags = flags

    def __hash__(self):
        return hash(self.flags)

    def __eq__(self, other):
        return isinstance(other, _Perturbed) and other.flags == self.flags


class ScanPrimitive(HiPrim):
    """One planned scan: inputs ``(consts, init, xs)``, outputs ``(carry, ys)``.

    Args:
      executor: the :class:`memjax._executor.Executor` of the plan.
      consts, init, xs: the arguments the primitive will be called with (their types are its input types).
      out: the shapes of ``(carry, ys)``.
      effects: the effects of the step's body (debug callbacks), which the primitive carries.
    """

    def __init__(self, executor: Executor, consts, init, xs, out, effects=frozenset()):
        self.in_avals = jax.tree_util.tree_map(jax.typeof, (consts, init, xs))
        # jax.typeof keeps what the shapes alone would lose: inside shard_map, the mesh axes an output varies over
        # (its cotangent must have the same type).
        self.out_aval = jax.tree_util.tree_map(lambda a: jax.typeof(a).update(weak_type=False), out)
        self.params = dict(executor=executor)
        self.effects = frozenset(effects)
        super().__init__()

    def expand(self, consts, init, xs):
        return self.executor.primal(consts, init, xs)

    # The sweeps run under jax.jit: outside a jit (eager jax.grad, jax.hessian) they are then one program each
    # rather than op-by-op dispatch, and XLA compiles them whole (XLA:CPU in jax 0.10 fails to compile some of
    # their loops on their own under vmap of jvp, as eager jax.hessian makes them).
    def vjp_fwd(self, nonzeros, consts, init, xs):
        out, residuals = jax.jit(self.executor.forward)(consts, init, xs)
        flags = tuple(tuple(jax.tree_util.tree_leaves(tree)) for tree in nonzeros)
        return out, (residuals, _Perturbed(flags))

    def vjp_bwd_retval(self, residuals, cotangents):
        residuals, perturbed = residuals
        cotangents = jax.tree_util.tree_map(_instantiate, cotangents, is_leaf=_is_zero)
        return jax.jit(lambda r, c: self.executor.backward(r, perturbed.flags, c))(residuals, cotangents)

    def jvp(self, primals, tangents):
        return jax.jvp(self.executor.primal, primals, self._tangents(tangents))

    def lin(self, nonzeros, consts, init, xs):
        return self.executor.primal(consts, init, xs), (consts, init, xs)

    def linearized(self, primals, *tangents):
        return jax.jvp(self.executor.primal, primals, self._tangents(tangents))[1]

    def batch_dim_rule(self, axis_data, dims):
        return jax.tree_util.tree_map(lambda _: 0, self.out_aval)

    def _tangents(self, tangents):
        return tuple(jax.tree_util.tree_map(_instantiate, tangents, is_leaf=_is_zero))


def _is_zero(value) -> bool:
    return isinstance(value, Zero)


def _instantiate(value):
    """A symbolic zero as an array of its own type (float0 for integer and boolean leaves, as JAX's are)."""
    return zero_cotangent(value.aval) if _is_zero(value) else value
