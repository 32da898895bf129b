"""Argument checks and closure conversion for :func:`memjax.scan`.

The checks are ``jax.lax.scan``'s own: the arguments go through ``lax.scan``'s abstract evaluation first, so
every mistake it diagnoses (a body that does not return a pair, carry structure or type mismatch, a scalar in
``xs``, inconsistent lengths, a traced ``length``, a non-array leaf) raises the same exception with the same
text, and weak-typed ``init`` leaves are promoted exactly as ``lax.scan`` promotes them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

__all__ = ["check_arguments", "closure_convert", "example_arguments"]


def check_arguments(f: Callable, init, xs, length, reverse, unroll):
    """Validate a scan as ``jax.lax.scan`` does; returns ``(init, length)``.

    ``init`` comes back with weak-typed leaves converted to the carry type the body returns (``lax.scan`` does
    the same, e.g. for a Python float ``init`` with a float64 body), and ``length`` as a Python ``int``.

    Raises:
      The exception ``jax.lax.scan`` raises for the same arguments, unchanged.
    """
    # xs is closed over rather than passed: eval_shape would turn a Python scalar leaf into a shape-() array,
    # and lax.scan's message quotes the leaf as the caller wrote it.
    carry_out, _ = jax.eval_shape(lambda init: jax.lax.scan(f, init, xs, length, reverse=reverse, unroll=unroll), init)
    init = jax.tree_util.tree_map(_promote_weak_typed, init, carry_out)
    if length is None:
        length = np.shape(jax.tree_util.tree_leaves(xs)[0])[0]
    return init, int(length)


def _promote_weak_typed(leaf, out):
    aval = jax.typeof(leaf)
    if getattr(aval, "weak_type", False) and aval.dtype != out.dtype:
        return jax.lax.convert_element_type(leaf, out.dtype)
    return leaf


def example_arguments(init, xs, length: int):
    """Arguments to trace one step with: ``(carry, x)``.

    The arrays themselves where they are traced (their types carry what abstract shapes do not, such as
    ``jax.shard_map``'s varying axes), shapes and dtypes otherwise.
    """
    x0 = jax.tree_util.tree_map(
        lambda a: (
            a[0]
            if length and isinstance(a, jax.core.Tracer)
            else jax.ShapeDtypeStruct(np.shape(a)[1:], jnp.result_type(a))
        ),
        xs,
    )
    carry = jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.core.Tracer) else jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), init
    )
    return carry, x0


def closure_convert(f: Callable, carry, x0):
    """``f(c, x) = step(c, x, *consts)`` with every array ``f`` closes over in ``consts``.

    Unlike ``jax.closure_convert``, which hoists only closed-over tracers, every constant is hoisted, concrete
    or traced, so that a step is measured and planned the same way whether or not it is being differentiated
    (``memjax.explain`` outside ``jax.grad`` then reports exactly what ``memjax.scan`` uses inside it).

    Returns:
      ``(step, consts, effects)``: the step, its constants, and the effects of its body (debug callbacks).
    """
    closed = jax.make_jaxpr(f)(carry, x0)
    out_tree = jax.tree_util.tree_structure(jax.eval_shape(f, carry, x0))

    def step(c, x, *consts):
        out = jex.jaxpr_as_fun(jex.ClosedJaxpr(closed.jaxpr, consts))(*jax.tree_util.tree_leaves((c, x)))
        return jax.tree_util.tree_unflatten(out_tree, out)

    return step, list(closed.consts), closed.effects
