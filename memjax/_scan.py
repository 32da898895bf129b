"""``memjax.scan``: ``jax.lax.scan`` whose gradient runs an optimal BPTT schedule inside a memory budget.

The forward pass is an ordinary scan. Under reverse-mode differentiation a ``jax.custom_vjp`` takes over:

1. *Plan.* The step is closure-converted (closed-over arrays become explicit, differentiable arguments), its
   carry and VJP residuals are measured (:mod:`memjax._measure`), the budget is turned into hidden-state units
   and ``alpha``, and :func:`memjax.solve` gives the policy; its :class:`~memjax.Schedule` is the program.
2. *Primal sweep.* One ``lax.scan`` runs every step once, as ``lax.scan`` would, and writes the hidden and
   internal states that the schedule's first sweep stores into a byte pool (:mod:`memjax._pool`). The last
   step runs under ``jax.vjp`` and its residuals are kept for the first backward step.
3. *Backward sweep.* A ``lax.scan`` over the rest of the schedule's table (one row per action) dispatches with
   ``lax.switch``: advance ``k`` steps (a ``fori_loop`` with traced bounds), save or restore a state, or
   back-propagate one step from recomputed or stored residuals. Parameter cotangents are accumulated, input
   cotangents written into their row of the output buffer.

The step is traced a fixed number of times and the compiled program does not grow with the sequence length.
Because the backward sweep contains while loops, it can be differentiated in forward mode (Hessian-vector
products as ``jax.jvp`` of ``jax.grad``) but not in reverse mode again.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax._budget import format_bytes, parse_budget
from memjax._measure import StepSizes, measure_step, tree_bytes
from memjax._pool import Layout
from memjax._schedule import Op, Schedule
from memjax._solver import KINDS, Policy, min_memory, solve

__all__ = ["scan", "plan_scan", "ScanPlan"]

_BRANCHES = (Op.ADVANCE, Op.SAVE_HIDDEN, Op.SAVE_INTERNAL, Op.RESTORE_HIDDEN, Op.RESTORE_INTERNAL, Op.BACKWARD,
             Op.BACKWARD_STORED)


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """Everything decided before running: sizes, the budget in bytes and units, the policy and its schedule.

    Attributes:
      length: number of steps.
      sizes: measured sizes of one step (:class:`memjax._measure.StepSizes`).
      budget_bytes: the budget for stored states, the initial carry included.
      policy: the solved :class:`~memjax.Policy` (``None`` for ``store_all``, which runs ``jax.lax.scan``).
      quantum_bytes: bytes of one memory quantum of the schedule.
    """

    length: int
    kind: str
    sizes: StepSizes
    budget_bytes: int
    policy: Policy | None
    quantum_bytes: int

    @property
    def store_all_bytes(self) -> int:
        """What standard BPTT stores: the initial carry and the internal state of every step but the last."""
        return self.sizes.carry_bytes + (self.length - 1) * self.sizes.internal_bytes

    @property
    def stored_bytes(self) -> int:
        """Bytes the schedule stores at its peak, the initial carry included."""
        if self.policy is None:
            return self.store_all_bytes
        return self.sizes.carry_bytes + self.schedule.stack_quanta * self.quantum_bytes

    @property
    def schedule(self) -> Schedule | None:
        return None if self.policy is None else self.policy.schedule()

    @property
    def forward_count(self) -> int:
        return self.length if self.policy is None else self.policy.cost


def _check_xs(xs, length):
    leaves = jax.tree_util.tree_leaves(xs)
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("scan got a scalar leaf in xs; every leaf of xs must have a leading axis to scan "
                             f"over, got shape {shape}.")
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise ValueError("scan got xs whose leaves have different leading axis sizes: "
                         f"{sorted(sizes)}; all leaves of xs must share the scanned length.")
    if length is not None:
        try:
            length = int(length)
        except (TypeError, ValueError):
            raise ValueError(f"length must be a concrete integer, got {length!r}.") from None
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}.")
        if sizes and sizes != {length}:
            raise ValueError(f"scan got length argument of {length} which disagrees with leading axis sizes "
                             f"{sorted(sizes)} of xs.")
        return length
    if not sizes:
        raise ValueError("scan got no values to scan over and `length` not provided: pass xs or length.")
    return sizes.pop()


def _check_leaves(tree, argument):
    for leaf in jax.tree_util.tree_leaves(tree):
        if not (isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex, bool))
                or hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(f"{argument} has a leaf of type {type(leaf).__name__}; every leaf must be an array or "
                            f"a scalar (wrap static data in the step function instead).")


def plan_scan(f, init, xs=None, length=None, *, memory=None, kind: str = "msm") -> ScanPlan:
    """Decide how :func:`scan` will differentiate ``f`` over ``xs``: sizes, budget, policy and schedule.

    Arguments are those of :func:`scan`; nothing is run. See :func:`memjax.explain` for a readable report.
    """
    return _prepare(f, init, xs, length, memory, kind)[0]


def _prepare(f, init, xs, length, memory, kind):
    """Check the arguments, closure-convert ``f`` and plan: returns ``(plan, step, consts)``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a policy kind; use one of {', '.join(map(repr, KINDS))}.")
    budget = parse_budget(memory)
    _check_leaves(init, "init")
    _check_leaves(xs, "xs")
    length = _check_xs(xs, length)
    x0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], jnp.result_type(a)), xs)
    carry = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), init)
    _check_carry(f, carry, x0)
    step, consts = jax.closure_convert(lambda c, x: f(c, x), carry, x0)
    consts = list(consts)
    sizes = measure_step(lambda p, c, x: step(c, x, *p), consts, carry, x0)
    return _plan(length, kind, sizes, budget), step, consts


def _check_carry(f, carry, x0):
    out = jax.eval_shape(f, carry, x0)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"scan body output must be a pair (carry, y), got {type(out).__name__}.")
    new = out[0]
    tree_in, tree_out = jax.tree_util.tree_structure(carry), jax.tree_util.tree_structure(new)
    if tree_in != tree_out:
        raise TypeError("scan body function carry input and carry output must have the same pytree structure, "
                        f"but they differ:\n  input carry: {tree_in}\n  output carry: {tree_out}")
    for a, b in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(new)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise TypeError("scan body function carry input and carry output must have equal types, but the "
                            f"input carry has type {a.dtype}{list(a.shape)} and the output carry has type "
                            f"{b.dtype}{list(b.shape)}.")


def _plan(length: int, kind: str, sizes: StepSizes, budget) -> ScanPlan:
    unit = max(sizes.carry_bytes, 1)
    alpha = sizes.internal_bytes / unit
    store_all = unit + max(length - 1, 0) * sizes.internal_bytes
    if length <= 1 or kind == "store_all":
        budget_bytes = store_all if budget is None else budget.resolve(store_all)
        if budget_bytes < store_all:
            raise ValueError(f"memory={format_bytes(budget_bytes)} is below what kind='store_all' stores "
                             f"({format_bytes(store_all)} = {store_all} bytes); raise memory or use kind='msm'.")
        return ScanPlan(length, kind, sizes, budget_bytes, None, unit)
    solver_kind = kind
    s_i = _quanta(alpha, kind)
    quantum = max(-(-unit // s_i[0]), -(-sizes.internal_bytes // s_i[1]))
    if budget is None:
        units = min_memory(length, 2 * length, alpha=alpha, kind=kind) if kind not in ("recompute",) else 1.0
        budget_bytes = int(round(units * s_i[0])) * quantum
    else:
        budget_bytes = budget.resolve(store_all)
    units = budget_bytes / (s_i[0] * quantum)
    least = min_memory(length, None, alpha=alpha, kind=kind)
    least_bytes = int(round(least * s_i[0])) * quantum
    if budget_bytes < least_bytes:
        raise ValueError(
            f"memory={format_bytes(budget_bytes)} ({budget_bytes} bytes) is below the least that kind={kind!r} "
            f"needs for this step over length={length}: {least_bytes} bytes ({format_bytes(least_bytes)}; the "
            f"carry is {sizes.carry_bytes} bytes, an internal state {sizes.internal_bytes} bytes). "
            f"Pass memory>={least_bytes}.")
    policy = solve(length, units, alpha=alpha, kind=solver_kind)
    return ScanPlan(length, kind, sizes, budget_bytes, policy, quantum)


def _quanta(alpha: float, kind: str) -> tuple[int, int]:
    from memjax._solver import _INF, _quantize  # the solver's own rounding, so both agree

    return (1, _INF) if kind in ("hsm", "recompute") else _quantize(alpha)


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False,
         unroll: int | bool = 1, *, memory=None, kind: str = "msm"):
    """``jax.lax.scan`` with memory-efficient, exact gradients (Gruslys et al., 2016).

    Semantically (values, gradients, pytrees, ``reverse``, ``unroll``) this is ``jax.lax.scan``::

      def scan(f, init, xs, length=None, reverse=False):
        carry, ys = init, []
        for x in (reversed(xs) if reverse else xs):
          carry, y = f(carry, x)
          ys.append(y)
        return carry, stack(reversed(ys) if reverse else ys)

    What differs is only what the backward pass stores and recomputes: instead of every step's residuals, it
    stores at most ``memory`` bytes of hidden states (carries) and internal states (residuals), chosen by the
    optimal policy of ``kind``, and recomputes the rest. Gradients flow to ``init``, ``xs`` and every array
    ``f`` closes over.

    Args:
      f, init, xs, length, reverse, unroll: as in ``jax.lax.scan``.
      memory: the budget for stored states, the initial carry included: an ``int`` of bytes, a string such as
        ``"64MiB"``, ``"1.5GB"`` or ``"5%"``, or a float in (0, 1], a fraction of what standard BPTT stores
        (``carry + (length - 1) * internal`` bytes). ``None``: the least memory whose schedule needs at most two
        forward evaluations per step (one extra forward pass). The transient working set (one step's residuals,
        cotangent accumulators, the ``ys`` and ``xs``-cotangent buffers) is outside the budget; see
        :func:`memjax.explain`. Under ``jax.vmap`` the budget applies to each mapped element.
      kind: the policy: ``"msm"`` (default, optimal over hidden and internal states), ``"hsm"`` (hidden states
        only, i.e. binomial checkpointing), ``"ism"``, ``"chen"``, ``"store_all"`` (runs ``jax.lax.scan``
        itself) or ``"recompute"``.

    Returns:
      ``(carry, ys)``, as ``jax.lax.scan``.

    Raises:
      ValueError: for a bad ``memory`` or ``kind``, a budget below the least the policy can use (the message
        gives it in bytes), or ``xs``/``length`` that disagree.
      TypeError: if ``f``'s carry output differs from its input in structure, shape or dtype.
    """
    plan, step, consts = _prepare(f, init, xs, length, memory, kind)
    if plan.policy is None:
        return jax.lax.scan(f, init, xs, plan.length, reverse=reverse, unroll=unroll)
    try:
        return _Runner(step, plan, reverse, unroll)(consts, init, xs)
    except TypeError as error:
        if "forward-mode" in str(error) or "jvp" in str(error).lower():
            raise TypeError(
                "memjax.scan cannot be differentiated in forward mode (jax.jvp, jax.linearize, jax.jacfwd) "
                "because its gradient is a jax.custom_vjp. Use jax.lax.scan for forward-mode derivatives, or "
                "jax.jvp of jax.grad (forward-over-reverse) for Hessian-vector products.") from error
        raise


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _zero_cotangent(aval):
    """A zero cotangent for a primal of this type: float0 for integer and boolean leaves, as JAX gives them."""
    if _is_float(aval):
        return jnp.zeros(aval.shape, aval.dtype)
    return np.zeros(aval.shape, jax.dtypes.float0)


class _Runner:
    """The custom-VJP executor of one planned scan."""

    def __init__(self, step, plan: ScanPlan, reverse: bool, unroll):
        self.step = step
        self.plan = plan
        self.reverse = reverse
        self.unroll = unroll
        schedule = plan.schedule
        sizes = plan.sizes
        self.varies = sizes.varies
        variant_avals = [a for a, v in zip(sizes.residual_avals, sizes.varies) if v]
        self.residual_layout = Layout(variant_avals)
        self.pool_bytes = schedule.stack_quanta * plan.quantum_bytes
        self._tables(schedule)

        @jax.custom_vjp
        def run(consts, init, xs):
            return jax.lax.scan(lambda c, x: step(c, x, *consts), init, xs, plan.length, reverse=reverse,
                                unroll=unroll)

        run.defvjp(self._forward, self._backward)
        self.run = run

    def __call__(self, consts, init, xs):
        return self.run(consts, init, xs)

    # -- tables --------------------------------------------------------------------------------------------
    def _tables(self, schedule: Schedule):
        t, quantum = self.plan.length, self.plan.quantum_bytes
        first = schedule.first_backward
        hidden_at = np.full(t, -1, np.int32)  # byte offset where h_k is saved during the primal sweep
        internal_at = np.full(t, -1, np.int32)  # byte offset where I_k is saved (index k - 1)
        position = 0
        for op, a, b, off in zip(schedule.op[:first], schedule.start[:first], schedule.stop[:first],
                                 schedule.offset[:first]):
            if op == Op.ADVANCE:
                position = b
            elif op == Op.SAVE_HIDDEN:
                hidden_at[a] = off * quantum
            elif op == Op.SAVE_INTERNAL:
                internal_at[a] = off * quantum
                position = a + 1
        last = (schedule.op[first], schedule.start[first])
        if position != t - 1 or last != (Op.BACKWARD, t - 1):  # pragma: no cover - guaranteed by the solver
            raise AssertionError("the schedule's first sweep does not end with the last step")
        self.hidden_at, self.internal_at = hidden_at, internal_at
        rest = slice(first + 1, None)
        keep = schedule.op[rest] != Op.FREE
        ops = schedule.op[rest][keep]
        self.ops = np.searchsorted(np.array(_BRANCHES), ops).astype(np.int32)
        self.starts = schedule.start[rest][keep]
        self.stops = schedule.stop[rest][keep]
        offsets = schedule.offset[rest][keep]
        self.offsets = np.where(offsets < 0, -1, offsets * quantum).astype(np.int32)

    # -- helpers -------------------------------------------------------------------------------------------
    def _xs_index(self, k):
        """Index into xs of step k (1-based)."""
        return self.plan.length - k if self.reverse else k - 1

    def _split(self, leaves):
        variant = [leaf for leaf, v in zip(leaves, self.varies) if v]
        invariant = [leaf for leaf, v in zip(leaves, self.varies) if not v]
        return variant, invariant

    def _merge(self, variant, invariant):
        variant, invariant = iter(variant), iter(invariant)
        return [next(variant) if v else next(invariant) for v in self.varies]

    def _step(self, consts, carry, x):
        return self.step(carry, x, *consts)

    def _vjp(self, consts, carry, x):
        (new, y), pullback = jax.vjp(self._step, consts, carry, x)
        return new, y, jax.tree_util.tree_leaves(pullback)

    def _pullback(self, leaves):
        return jax.tree_util.tree_unflatten(self.plan.sizes.pullback_tree, leaves)

    # -- forward -------------------------------------------------------------------------------------------
    def _forward(self, consts, init, xs):
        t = self.plan.length
        carry_layout = Layout(jax.tree_util.tree_leaves(init))
        residual_layout = self.residual_layout
        pool = jnp.zeros((self.pool_bytes,), jnp.uint8)

        def body(state, inputs):
            carry, pool = state
            x, hidden_at, internal_at = inputs
            pool = jax.lax.cond(hidden_at >= 0,
                                lambda p: carry_layout.store(p, jax.tree_util.tree_leaves(carry), hidden_at),
                                lambda p: p, pool)

            def plain(carry, pool):
                new, y = self._step(consts, carry, x)
                return new, y, pool

            def saving(carry, pool):
                new, y, leaves = self._vjp(consts, carry, x)
                variant, _ = self._split(leaves)
                data = variant + jax.tree_util.tree_leaves(new)
                return new, y, Layout(residual_layout.avals + carry_layout.avals).store(pool, data, internal_at)

            new, y, pool = jax.lax.cond(internal_at >= 0, saving, plain, carry, pool)
            return (new, pool), y

        # Steps 1..t-1 in a scan, then step t under jax.vjp (its residuals start the backward sweep).
        body_xs = jax.tree_util.tree_map(lambda a: a[1:] if self.reverse else a[:-1], xs)
        last_x = jax.tree_util.tree_map(lambda a: a[0] if self.reverse else a[-1], xs)
        hidden_at, internal_at = self.hidden_at[: t - 1], self.internal_at[: t - 1]
        if self.reverse:
            hidden_at, internal_at = hidden_at[::-1], internal_at[::-1]
        (carry, pool), ys = jax.lax.scan(body, (init, pool), (body_xs, hidden_at, internal_at), t - 1,
                                         reverse=self.reverse, unroll=self.unroll)
        if self.hidden_at[t - 1] >= 0:
            pool = carry_layout.store(pool, jax.tree_util.tree_leaves(carry), int(self.hidden_at[t - 1]))
        final, y_last, leaves = self._vjp(consts, carry, last_x)
        join = (lambda rest, y: jnp.concatenate([y[None], rest])) if self.reverse else (
            lambda rest, y: jnp.concatenate([rest, y[None]]))
        ys = jax.tree_util.tree_map(join, ys, y_last)
        return (final, ys), (consts, init, xs, pool, leaves)

    # -- backward ------------------------------------------------------------------------------------------
    def _backward(self, residuals, cotangents):
        consts, init, xs, pool, last_leaves = residuals
        ct_final, ct_ys = cotangents
        t = self.plan.length
        _, invariant = self._split(last_leaves)
        carry_avals = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype), init))
        carry_tree = jax.tree_util.tree_structure(init)
        carry_layout = Layout(carry_avals)
        residual_layout = self.residual_layout
        const_avals = [jax.ShapeDtypeStruct(jnp.shape(c), jnp.result_type(c)) for c in consts]
        x_leaves, x_tree = jax.tree_util.tree_flatten(xs)
        x_avals = [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in x_leaves]
        y_leaves, y_tree = jax.tree_util.tree_flatten(ct_ys)

        def x_at(k):
            index = self._xs_index(k)
            return jax.tree_util.tree_unflatten(
                x_tree, [jax.lax.dynamic_index_in_dim(a, index, keepdims=False) for a in x_leaves])

        def ct_y_at(k):
            index = self._xs_index(k)
            return jax.tree_util.tree_unflatten(y_tree, [
                jax.lax.dynamic_index_in_dim(a, index, keepdims=False) if a.dtype != jax.dtypes.float0
                else np.zeros(a.shape[1:], jax.dtypes.float0) for a in y_leaves])

        def floats(leaves, avals):
            return [leaf for leaf, aval in zip(leaves, avals) if _is_float(aval)]

        def with_zeros(float_leaves, avals):
            it = iter(float_leaves)
            return [next(it) if _is_float(aval) else _zero_cotangent(aval) for aval in avals]

        def pull(pullback, g, k):
            """Back-propagate step k: returns (g_{k-1}, const cotangents, x cotangent) as float leaves."""
            ct_out = (jax.tree_util.tree_unflatten(carry_tree, with_zeros(g, carry_avals)), ct_y_at(k))
            ct_consts, ct_carry, ct_x = pullback(ct_out)
            return (floats(jax.tree_util.tree_leaves(ct_carry), carry_avals),
                    floats(jax.tree_util.tree_leaves(ct_consts), const_avals),
                    floats(jax.tree_util.tree_leaves(ct_x), x_avals))

        def accumulate(state, k, g, ct_consts, ct_x):
            register, pool, _, acc, buffers = state
            acc = [a + b for a, b in zip(acc, ct_consts)]
            index = self._xs_index(k)
            buffers = [jax.lax.dynamic_update_index_in_dim(buf, v.astype(buf.dtype), index, 0)
                       for buf, v in zip(buffers, ct_x)]
            return register, pool, g, acc, buffers

        # Step t, from the residuals kept by the primal sweep.
        g = floats(jax.tree_util.tree_leaves(ct_final), carry_avals)
        g, ct_consts, ct_x = pull(self._pullback(last_leaves), g, t)
        buffers = [jnp.zeros((t, *aval.shape), aval.dtype) for aval in floats(x_avals, x_avals)]
        state = accumulate((init, pool, g, [jnp.zeros_like(c) for c in ct_consts], buffers), t, g, ct_consts, ct_x)

        def carry_of(leaves):
            return jax.tree_util.tree_unflatten(carry_tree, leaves)

        def advance(state, a, b, off):
            register = jax.lax.fori_loop(a, b, lambda k, c: self._step(consts, c, x_at(k + 1))[0], state[0])
            return (register, *state[1:])

        def save_hidden(state, a, b, off):
            return (state[0], carry_layout.store(state[1], jax.tree_util.tree_leaves(state[0]), off), *state[2:])

        def save_internal(state, a, b, off):
            new, _, leaves = self._vjp(consts, state[0], x_at(a + 1))
            variant, _ = self._split(leaves)
            data = variant + jax.tree_util.tree_leaves(new)
            pool = Layout(residual_layout.avals + carry_layout.avals).store(state[1], data, off)
            return (new, pool, *state[2:])

        def restore_hidden(state, a, b, off):
            stored = carry_layout.load(state[1], jnp.maximum(off, 0))
            leaves = [jnp.where(off < 0, first, saved)
                      for first, saved in zip(jax.tree_util.tree_leaves(init), stored)]
            return (carry_of(leaves), *state[1:])

        def restore_internal(state, a, b, off):
            leaves = carry_layout.load(state[1], off + residual_layout.nbytes)
            return (carry_of(leaves), *state[1:])

        def backward(state, a, b, off):
            _, _, leaves = self._vjp(consts, state[0], x_at(a + 1))
            g, ct_consts, ct_x = pull(self._pullback(leaves), state[2], a + 1)
            return accumulate(state, a + 1, g, ct_consts, ct_x)

        def backward_stored(state, a, b, off):
            variant = residual_layout.load(state[1], off)
            g, ct_consts, ct_x = pull(self._pullback(self._merge(variant, invariant)), state[2], a)
            return accumulate(state, a, g, ct_consts, ct_x)

        branches = [advance, save_hidden, save_internal, restore_hidden, restore_internal, backward,
                    backward_stored]

        def row(state, action):
            op, a, b, off = action
            return jax.lax.switch(op, branches, state, a, b, off), None

        if len(self.ops):
            state, _ = jax.lax.scan(row, state, (self.ops, self.starts, self.stops, self.offsets))
        _, _, g, ct_consts, buffers = state
        ct_init = carry_of(with_zeros(g, carry_avals))
        ct_consts = with_zeros(ct_consts, const_avals)
        it = iter(buffers)
        ct_xs = jax.tree_util.tree_unflatten(x_tree, [
            next(it) if _is_float(aval) else np.zeros((t, *aval.shape), jax.dtypes.float0) for aval in x_avals])
        return ct_consts, ct_init, ct_xs
