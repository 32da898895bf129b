"""The executor of a planned scan: the primal scan, the forward sweep that stores the schedule's first states,
and the backward sweep that runs the rest of the schedule.

* *Forward sweep.* One ``lax.scan`` runs every step once, as ``lax.scan`` would, and writes the hidden and
  internal states that the schedule's first sweep stores into per-dtype pools (:mod:`memjax._pool`). The last
  step runs under ``jax.vjp`` and its residuals are kept for the first backward step.
* *Backward sweep.* A ``lax.scan`` over the rest of the schedule's table, one row per action, each action
  touching at most one step: run one step forward, save or restore a state, or back-propagate one step from
  recomputed or stored residuals. Every loop has a static trip count, so the sweep can itself be differentiated
  in reverse mode (second-order derivatives) as well as in forward mode.

Parameter cotangents are accumulated, input cotangents written into their row of the output buffer. The step is
traced a fixed number of times and the compiled program does not grow with the sequence length.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from memjax._pool import PoolLayout
from memjax._schedule import Op, Schedule

__all__ = ["Executor", "Tables", "compile_tables", "dispatch_count", "zero_cotangent"]

# lax.conds that a backward row evaluates, and a forward-sweep step: see Executor.backward and Executor.forward.
_CONDS_PER_ROW = 7
_CONDS_PER_FORWARD_STEP = 2


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def zero_cotangent(aval):
    """A zero cotangent for a primal of this type: float0 for integer and boolean leaves, as JAX gives them."""
    if not _is_float(aval):
        return np.zeros(aval.shape, jax.dtypes.float0)
    zeros, axes = jnp.zeros(aval.shape, aval.dtype), _varying_axes(aval)
    return jax.lax.pcast(zeros, tuple(sorted(axes)), to="varying") if axes else zeros


def _avals(tree) -> list:
    """The types of the leaves (shape, dtype and, inside ``jax.shard_map``, varying axes)."""
    return [jax.typeof(a) for a in jax.tree_util.tree_leaves(tree)]


def _varying_axes(aval) -> set:
    """The mesh axes a value varies over inside ``jax.shard_map`` (empty elsewhere)."""
    vma = getattr(aval, "vma", None)  # newer JAX; jax 0.10 calls it manual_axis_type.varying
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    return set(vma or ())


def _varying(tree, *like):
    """``tree`` cast to vary over every mesh axis that a leaf of ``like`` varies over (inside ``jax.shard_map``;
    elsewhere a no-op). Buffers created here as zeros must have the type of what is written into them."""
    axes = set().union(*(_varying_axes(jax.typeof(leaf)) for leaf in jax.tree_util.tree_leaves(like)))
    if not axes:
        return tree
    return jax.tree_util.tree_map(lambda a: jax.lax.pcast(a, tuple(sorted(axes)), to="varying"), tree)


def _select(wanted, leaves):
    return [leaf for leaf, w in zip(leaves, wanted) if w]


def _fill(wanted, leaves, avals):
    """Put ``leaves`` where ``wanted`` and zero cotangents elsewhere."""
    it = iter(leaves)
    return [next(it) if w else zero_cotangent(aval) for aval, w in zip(avals, wanted)]


@dataclasses.dataclass(frozen=True)
class Tables:
    """The schedule as integer tables for the executor (offsets in quanta, -1 for none).

    Forward sweep, one entry per step ``k = 1..t``: ``save_hidden[k-1]`` is where ``h_{k-1}`` goes before step
    ``k``, ``save_internal[k-1]`` where ``I_k`` goes. Backward sweep: the schedule's actions after the first
    backward step, one row per action and step: ``ADVANCE`` from ``a`` to ``b`` becomes ``b - a`` rows that each
    run one step (``start`` is the position before it), ``FREE`` is dropped (it only matters to the
    accounting), and restoring the initial carry is coded as ``RESTORE_HIDDEN`` with offset -1.
    """

    save_hidden: np.ndarray
    save_internal: np.ndarray
    op: np.ndarray
    start: np.ndarray
    offset: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.op.shape[0])


def compile_tables(schedule: Schedule) -> Tables:
    t = schedule.length
    first = schedule.first_backward
    save_hidden = np.full(t, -1, np.int32)
    save_internal = np.full(t, -1, np.int32)
    position = 0
    for op, a, b, off in zip(schedule.op[:first], schedule.start[:first], schedule.stop[:first],
                             schedule.offset[:first]):
        if op == Op.ADVANCE:
            position = b
        elif op == Op.SAVE_HIDDEN:
            save_hidden[a] = off
        elif op == Op.SAVE_INTERNAL:
            save_internal[a] = off
            position = a + 1
    if position != t - 1 or (schedule.op[first], schedule.start[first]) != (Op.BACKWARD, t - 1):
        raise AssertionError("a schedule's first sweep must end by back-propagating the last step")  # pragma: no cover
    rest = slice(first + 1, None)
    op, start, stop, offset = (column[rest] for column in (schedule.op, schedule.start, schedule.stop,
                                                           schedule.offset))
    keep = op != Op.FREE
    op, start, stop, offset = op[keep], start[keep], stop[keep], offset[keep]
    # One row per step of an ADVANCE: repeat its row (b - a) times, with start a, a + 1, ..., b - 1.
    repeats = np.where(op == Op.ADVANCE, stop - start, 1)
    first_of_row = np.repeat(np.cumsum(repeats) - repeats, repeats)
    within = np.arange(int(repeats.sum())) - first_of_row
    op, start, offset = (np.repeat(column, repeats) for column in (op, start, offset))
    start = (start + within).astype(np.int32)
    return Tables(save_hidden, save_internal, op.astype(np.int32), start, offset.astype(np.int32))


def dispatch_count(tables: Tables) -> int:
    """Conditionals evaluated per gradient: per forward-sweep step and per backward row."""
    return _CONDS_PER_FORWARD_STEP * max(len(tables.save_hidden) - 1, 0) + _CONDS_PER_ROW * tables.rows


def _when(predicate, update, operand):
    """``update(operand)`` if ``predicate`` else ``operand``, as a ``lax.cond`` (XLA keeps it in place)."""
    return jax.lax.cond(predicate, update, lambda operand: operand, operand)


class Executor:
    """Runs one planned scan of ``step(carry, x, *consts) -> (carry, y)``.

    Each row of the backward table is run as one ``lax.cond`` per kind of action, each either updating its
    part of the state or passing it through. XLA then updates the pools and the cotangent buffers in place; a
    single ``lax.switch`` over all actions made it copy the whole pool on every row, and branches that return
    zeros for what they do not compute would materialise parameter-sized arrays on every row.

    Args:
      step: the closure-converted step.
      plan: the :class:`memjax.ScanPlan`, with a policy.
      reverse, unroll: as in ``jax.lax.scan``.
    """

    def __init__(self, step, plan, reverse: bool, unroll):
        self.step = step
        self.plan = plan
        self.reverse = reverse
        self.unroll = unroll
        sizes = plan.sizes
        self.varies, self.stored, self.from_x = sizes.varies, sizes.stored, sizes.from_x
        schedule = plan.schedule
        internal = None if plan.kind in ("hsm", "recompute") else schedule.internal_quanta
        self.layout = PoolLayout(sizes.carry_avals, sizes.variant_avals, schedule.hidden_quanta, internal)
        self.tables = compile_tables(schedule)

    def __repr__(self) -> str:  # shown in jaxprs, as the primitive's parameter
        return f"Executor(kind={self.plan.kind!r}, length={self.plan.length}, forwards={self.plan.forward_count})"

    # -- helpers -------------------------------------------------------------------------------------------
    def _index(self, k):
        """Index into xs and ys of step k (1-based)."""
        return self.plan.length - k if self.reverse else k - 1

    def _x(self, xs, k):
        return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, self._index(k), keepdims=False),
                                      xs)

    def _step(self, consts, carry, x):
        return self.step(carry, x, *consts)

    def _vjp(self, consts, carry, x):
        (new, y), pullback = jax.vjp(self._step, consts, carry, x)
        return new, y, jax.tree_util.tree_leaves(pullback)

    def _internal_item(self, leaves, new):
        """What a stored internal state holds: the residual leaves stored per step, then the carry after it."""
        return [leaf for leaf, keep in zip(leaves, self.stored) if keep] + jax.tree_util.tree_leaves(new)

    def _pullback(self, leaves):
        return jax.tree_util.tree_unflatten(self.plan.sizes.pullback_tree, leaves)

    # -- the three sweeps ----------------------------------------------------------------------------------
    def primal(self, consts, init, xs):
        """The scan itself, undifferentiated: ``jax.lax.scan``."""
        return jax.lax.scan(lambda c, x: self._step(consts, c, x), init, xs, self.plan.length,
                            reverse=self.reverse, unroll=self.unroll)

    def forward(self, consts, init, xs):
        """The forward sweep: ``((carry, ys), residuals)`` for :meth:`backward`."""
        t, tables, layout = self.plan.length, self.tables, self.layout
        y_aval = jax.eval_shape(self._step, consts, init, self._x(xs, 1))[1]
        ys = _varying(jax.tree_util.tree_map(lambda a: jnp.zeros((t, *a.shape), a.dtype), y_aval), consts, init, xs)

        def body(state, inputs):
            carry, pools, ys = state
            k, save_hidden, save_internal = inputs
            x = self._x(xs, k)
            pools = _when(save_hidden >= 0, lambda pools: layout.hidden.store(
                pools, jax.tree_util.tree_leaves(carry), save_hidden), pools)

            def plain(pools):
                new, y = self._step(consts, carry, x)
                return new, y, pools

            def saving(pools):
                new, y, leaves = self._vjp(consts, carry, x)
                return new, y, layout.internal.store(pools, self._internal_item(leaves, new), save_internal)

            new, y, pools = jax.lax.cond(save_internal >= 0, saving, plain, pools)
            ys = jax.tree_util.tree_map(
                lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, self._index(k), 0), ys, y)
            return (new, pools, ys), None

        # Steps 1..t-1 in a scan, then step t under jax.vjp: its residuals start the backward sweep.
        steps = jax.lax.iota(jnp.int32, t - 1) + 1  # an iota, not a length-t constant in the program
        state = (init, _varying(layout.zeros(self.plan.schedule.stack_quanta), consts, init, xs), ys)
        (carry, pools, ys), _ = jax.lax.scan(body, state, (steps, tables.save_hidden[: t - 1],
                                                           tables.save_internal[: t - 1]), unroll=self.unroll)
        if tables.save_hidden[t - 1] >= 0:
            pools = layout.hidden.store(pools, jax.tree_util.tree_leaves(carry), int(tables.save_hidden[t - 1]))
        final, y, leaves = self._vjp(consts, carry, self._x(xs, t))
        ys = jax.tree_util.tree_map(lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, self._index(t), 0),
                                    ys, y)
        return (final, ys), (consts, init, xs, pools, leaves)

    def backward(self, residuals, perturbed, cotangents):
        """The backward sweep: cotangents of ``(consts, init, xs)``.

        Args:
          residuals: what :meth:`forward` returned.
          perturbed: for ``(consts, init, xs)``, a list per argument of which leaves are differentiated; no
            cotangent is computed for the others (which also spares the ``(length, *x.shape)`` buffer of ``xs``
            cotangents when only parameters are differentiated).
          cotangents: of ``(carry, ys)``, with zero leaves as ``None`` or arrays.
        """
        consts, init, xs, pools, last_leaves = residuals
        ct_final, ct_ys = cotangents
        t, tables, layout = self.plan.length, self.tables, self.layout
        invariant = [leaf for leaf, v in zip(last_leaves, self.varies) if not v]
        carry_avals, const_avals = _avals(init), _avals(consts)
        carry_tree = jax.tree_util.tree_structure(init)
        x_leaves, x_tree = jax.tree_util.tree_flatten(xs)
        x_avals = [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in x_leaves]
        y_leaves, y_tree = jax.tree_util.tree_flatten(ct_ys)
        n_residuals = len(layout.internal.avals) - len(carry_avals)

        # Cotangents are carried for differentiated float leaves only (carry leaves always: they chain steps).
        consts_perturbed, _, xs_perturbed = perturbed
        const_wanted = [_is_float(a) and p for a, p in zip(const_avals, consts_perturbed)]
        x_wanted = [_is_float(a) and p for a, p in zip(x_avals, xs_perturbed)]
        carry_wanted = [_is_float(a) for a in carry_avals]

        def carry_of(leaves):
            return jax.tree_util.tree_unflatten(carry_tree, leaves)

        def ct_y(k):
            index = self._index(k)
            return jax.tree_util.tree_unflatten(y_tree, [
                np.zeros(a.shape[1:], jax.dtypes.float0) if a.dtype == jax.dtypes.float0
                else jax.lax.dynamic_index_in_dim(a, index, keepdims=False) for a in y_leaves])

        def back(leaves, k, cotangent_state):
            """Back-propagate step k from its residual leaves; accumulate into (g, acc, buffers)."""
            g, acc, buffers = cotangent_state
            ct_out = (carry_of(_fill(carry_wanted, g, carry_avals)), ct_y(k))
            ct_consts, ct_carry, ct_x = self._pullback(leaves)(ct_out)
            acc = [a + c for a, c in zip(acc, _select(const_wanted, jax.tree_util.tree_leaves(ct_consts)))]
            buffers = [jax.lax.dynamic_update_index_in_dim(buf, c.astype(buf.dtype), self._index(k), 0)
                       for buf, c in zip(buffers, _select(x_wanted, jax.tree_util.tree_leaves(ct_x)))]
            return _select(carry_wanted, jax.tree_util.tree_leaves(ct_carry)), acc, buffers

        def row(state, action):
            register, pools, cotangent_state = state
            op, a, offset = action
            safe = jnp.maximum(offset, 0)
            register = _when(op == Op.RESTORE_HIDDEN, lambda r: carry_of([
                jnp.where(offset < 0, first, saved) for first, saved in
                zip(jax.tree_util.tree_leaves(init), layout.hidden.load(pools, safe))]), register)
            register = _when(op == Op.RESTORE_INTERNAL,
                             lambda r: carry_of(layout.internal.load(pools, offset)[n_residuals:]), register)
            register = _when(op == Op.ADVANCE, lambda r: self._step(consts, r, self._x(xs, a + 1))[0], register)
            pools = _when(op == Op.SAVE_HIDDEN, lambda p: layout.hidden.store(
                p, jax.tree_util.tree_leaves(register), offset), pools)

            def save_internal(operand):
                register, pools = operand
                new, _, leaves = self._vjp(consts, register, self._x(xs, a + 1))
                return new, layout.internal.store(pools, self._internal_item(leaves, new), offset)

            register, pools = _when(op == Op.SAVE_INTERNAL, save_internal, (register, pools))
            cotangent_state = _when(op == Op.BACKWARD, lambda cs: back(
                self._vjp(consts, register, self._x(xs, a + 1))[2], a + 1, cs), cotangent_state)

            def backward_stored(cs):
                stored = iter(layout.internal.load(pools, offset)[:n_residuals])
                shared = iter(invariant)
                x = jax.tree_util.tree_leaves(self._x(xs, a))  # residuals that are x itself: read back, not stored
                return back([x[j] if j >= 0 else next(stored) if v else next(shared)
                             for v, j in zip(self.varies, self.from_x)], a, cs)

            cotangent_state = _when(op == Op.BACKWARD_STORED, backward_stored, cotangent_state)
            return (register, pools, cotangent_state), None

        # Step t, from the residuals kept by the forward sweep; then the table.
        acc = [jnp.zeros(a.shape, a.dtype) for a in _select(const_wanted, const_avals)]
        buffers = _varying([jnp.zeros((t, *a.shape), a.dtype) for a in _select(x_wanted, x_avals)], xs)
        g = _select(carry_wanted, jax.tree_util.tree_leaves(ct_final))
        state = (init, pools, back(last_leaves, t, (g, acc, buffers)))
        if tables.rows:
            state, _ = jax.lax.scan(row, state, (tables.op, tables.start, tables.offset))
        g, acc, buffers = state[2]
        ct_xs = jax.tree_util.tree_unflatten(x_tree, _fill(x_wanted, buffers, _avals(x_leaves)))
        return _fill(const_wanted, acc, const_avals), carry_of(_fill(carry_wanted, g, carry_avals)), ct_xs
