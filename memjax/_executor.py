"""What the executors of a planned scan share: the primal scan, the step and its VJP, the pools' layout, and the
cotangent bookkeeping of the backward sweep.

Two executors run a schedule, both with loops of static trip counts only, so that JAX can differentiate the
backward sweep again (second order) as well as in forward mode:

* :class:`~memjax._pipelined.Pipelined` (the two-forward family: the default budget, Chen, the flat parts of
  MSM): the schedule re-timed by :mod:`memjax._pipeline` into one loop with a uniform body (one forward and one
  backward step per iteration, no conditional), then a loop of the backward steps left.
* :class:`~memjax._interpreter.Interpreter` (every other schedule): one row per action and step, each row one
  ``lax.cond`` per kind of action.

Forward sweep: every step runs once, as ``lax.scan`` would, and the states the schedule stores in its first
sweep are written into per-dtype pools (:mod:`memjax._pool`). The last step runs under ``jax.vjp`` and its
residuals are kept for the first backward step. Parameter cotangents are accumulated, input cotangents written
into their row of the output buffer. The step is traced a fixed number of times and the compiled program does
not grow with the sequence length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax._pool import PoolLayout
from memjax._runs import Runs, compact

__all__ = ["Executor", "loop", "when", "zero_cotangent"]


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


def when(predicate, update, operand):
    """``update(operand)`` if ``predicate`` else ``operand``, as a ``lax.cond`` (XLA keeps it in place)."""
    return jax.lax.cond(predicate, update, lambda operand: operand, operand)


COMPACT_BYTES = 256 * 1024


def loop(body, state, inputs, unroll=1):
    """``lax.scan`` of ``body`` over ``inputs`` (a pytree of arrays, or of :class:`memjax._runs.Runs`, with a
    common leading axis), skipped when they are empty.

    Integer tables given as numpy arrays (one row per iteration, a row of any shape) are embedded as their runs
    (:mod:`memjax._runs`) where those take a quarter of the bytes or less, and tables given as runs always are:
    the loop carries an iteration counter and, per such table, the run of its next entry, from which each row is
    computed. The compiled program then holds tables that grow with the runs, not with the length. Numpy tables
    are compacted only in loops whose tables take ``COMPACT_BYTES`` or more (from about 16,000 steps on):
    decoding adds a few operations per table to the loop's body, and to the time XLA takes to compile it.
    """
    leaves, tree = jax.tree_util.tree_flatten(inputs, is_leaf=lambda leaf: isinstance(leaf, Runs))
    if not leaves or leaves[0].shape[0] == 0:
        return state
    length = leaves[0].shape[0]
    tables = [isinstance(leaf, np.ndarray) and leaf.dtype.kind in "iu" for leaf in leaves]
    if sum(leaf.nbytes for leaf, table in zip(leaves, tables) if table) >= COMPACT_BYTES:
        leaves = [(compact(leaf) or leaf) if table else leaf for leaf, table in zip(leaves, tables)]
    encoded = [_RunTable(leaf) if isinstance(leaf, Runs) else None for leaf in leaves]
    if not any(encoded):
        inputs = jax.tree_util.tree_unflatten(tree, leaves)
        return jax.lax.scan(lambda state, inputs: (body(state, inputs), None), state, inputs, unroll=unroll)[0]
    dense = [leaf for leaf, table in zip(leaves, encoded) if table is None]

    def counted(carry, dense_row):
        state, j, cursors = carry
        dense_row, cursors = iter(dense_row or ()), iter(cursors)
        row, following = [], []
        for table in encoded:
            if table is None:
                row.append(next(dense_row))
            else:
                value, run = table.row(j, next(cursors))
                row.append(value)
                following.append(run)
        state = body(state, jax.tree_util.tree_unflatten(tree, row))
        return (state, j + 1, tuple(following)), None

    zero = np.int32(0)
    cursors = tuple(zero for table in encoded if table is not None)
    return jax.lax.scan(counted, (state, zero, cursors), dense or None, length=length, unroll=unroll)[0][0]


class _RunTable:
    """A table kept as runs (:class:`memjax._runs.Runs`), decoded a row at a time (see :func:`loop`)."""

    def __init__(self, runs: Runs):
        self.shape, self.dtype, self.period = runs.shape[1:], runs.dtype, runs.period
        self.width = int(np.prod(self.shape, dtype=np.int64))
        # Each run's first entry, then the end, repeated so that a window of width + 1 bounds never runs off.
        bounds = np.concatenate([runs.starts, np.full(self.width + 1, runs.size)])
        firsts, steps = runs.firsts.reshape(-1), runs.steps.reshape(-1)
        self.bounds, self.firsts, self.steps = (jnp.asarray(a.astype(np.int32)) for a in (bounds, firsts, steps))

    def row(self, j, run):
        """Row ``j``, given the run of its first entry; and the run of the next row's first entry."""
        if self.width == 1:  # the row is its run's entry (runs are never empty): no window to search
            value = self._entries(run, j - self.bounds[run]).reshape(self.shape).astype(self.dtype)
            return value, run + (self.bounds[run + 1] == j + 1).astype(np.int32)
        entries = j * self.width + jnp.arange(self.width, dtype=np.int32)
        window = jax.lax.dynamic_slice(self.bounds, (run + 1,), (self.width,))  # where the next runs start
        runs = run + jnp.sum(window[:, None] <= entries[None, :], axis=0, dtype=np.int32)
        values = self._entries(runs, entries - self.bounds[runs])
        last = runs[-1]
        following = last + (self.bounds[last + 1] == (j + 1) * self.width).astype(np.int32)
        return values.reshape(self.shape).astype(self.dtype), following

    def _entries(self, runs, k):
        """Entry ``k`` of run ``runs`` (arrays of the same shape)."""
        if self.period == 1:
            return self.firsts[runs] + self.steps[runs] * k
        phase = runs * self.period + k % self.period
        return self.firsts[phase] + self.steps[phase] * (k // self.period)


class Executor:
    """What both executors share: the step and its VJP, the pools' layout, the primal scan, and the cotangent
    bookkeeping of the backward sweep.

    Args:
      step: the closure-converted step ``step(carry, x, *consts) -> (carry, y)``.
      plan: the :class:`memjax.ScanPlan`, with a policy.
      reverse, unroll: as in ``jax.lax.scan``.
    """

    def __init__(self, step, plan, reverse: bool, unroll):
        self.step = step
        self.plan = plan
        self.reverse = reverse
        self.unroll = unroll
        sizes = plan.sizes
        self.varies, self.stored, self.from_x, self.from_carry = (
            sizes.varies,
            sizes.stored,
            sizes.from_x,
            sizes.from_carry,
        )
        schedule = plan.schedule
        internal = None if plan.kind in ("hsm", "recompute") else schedule.internal_quanta
        self.layout = PoolLayout(sizes.carry_avals, sizes.variant_avals, schedule.hidden_quanta, internal)

    def __repr__(self) -> str:  # shown in jaxprs, as the primitive's parameter
        return (
            f"{type(self).__name__}(kind={self.plan.kind!r}, length={self.plan.length}, forwards={self.forward_count})"
        )

    @property
    def forward_count(self) -> int:
        """Forward step evaluations per gradient."""
        return self.plan.forward_count

    @property
    def conditionals(self) -> int:
        """Conditionals evaluated per gradient (no loop has a dynamic trip count)."""
        return self.plan.conditionals

    # -- helpers -------------------------------------------------------------------------------------------
    def _index(self, k):
        """Index into xs and ys of step k (1-based)."""
        return self.plan.length - k if self.reverse else k - 1

    def _x(self, xs, k):
        return jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, self._index(k), keepdims=False), xs)

    def _step(self, consts, carry, x):
        return self.step(carry, x, *consts)

    def _vjp(self, consts, carry, x):
        (new, y), leaves = self.plan.sizes.vjp(consts, carry, x)
        return new, y, leaves

    def _internal_item(self, leaves, new):
        """What a stored internal state holds: the residual leaves stored per step, then the carry after it."""
        return [leaf for leaf, keep in zip(leaves, self.stored) if keep] + jax.tree_util.tree_leaves(new)

    def _store_internal(self, consts, xs, pools, carry, k, offset, starts=None):
        """Run step ``k`` from ``carry`` under ``jax.vjp`` and store its internal state at quantum ``offset`` (or
        at element ``starts`` of each pool)."""
        new, y, leaves = self._vjp(consts, carry, self._x(xs, k))
        return new, y, self.layout.internal.store(pools, self._internal_item(leaves, new), offset, starts)

    def _ys_buffer(self, consts, init, xs):
        y_aval = jax.eval_shape(self._step, consts, init, self._x(xs, 1))[1]
        return _varying(
            jax.tree_util.tree_map(lambda a: jnp.zeros((self.plan.length, *a.shape), a.dtype), y_aval), consts, init, xs
        )

    def _write_y(self, ys, y, k):
        return jax.tree_util.tree_map(
            lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, self._index(k), 0), ys, y
        )

    def _pools(self, quanta, consts, init, xs):
        return _varying(self.layout.zeros(quanta), consts, init, xs)

    # -- the sweeps ----------------------------------------------------------------------------------------
    def primal(self, consts, init, xs):
        """The scan itself, undifferentiated: ``jax.lax.scan``."""
        return jax.lax.scan(
            lambda c, x: self._step(consts, c, x), init, xs, self.plan.length, reverse=self.reverse, unroll=self.unroll
        )

    def forward(self, consts, init, xs):
        """The forward sweep: ``((carry, ys), residuals)`` for :meth:`backward`."""
        raise NotImplementedError

    def backward(self, residuals, perturbed, cotangents):
        """The backward sweep: cotangents of ``(consts, init, xs)``.

        Args:
          residuals: what :meth:`forward` returned: ``(consts, init, xs, pools, residual leaves of step t)``.
          perturbed: for ``(consts, init, xs)``, a list per argument of which leaves are differentiated; no
            cotangent is computed for the others (which also spares the ``(length, *x.shape)`` buffer of ``xs``
            cotangents when only parameters are differentiated).
          cotangents: of ``(carry, ys)``, as arrays.
        """
        consts, init, xs, pools, last_leaves = residuals
        chain = _Cotangents(self, consts, init, xs, perturbed, cotangents, last_leaves)
        state = chain.start(self.plan.length, last_leaves)
        state = self._backward_sweep(consts, init, xs, pools, chain, state)
        return chain.finish(state)

    def _backward_sweep(self, consts, init, xs, pools, chain, state):
        """Steps ``length - 1 .. 1``: the cotangent state after them."""
        raise NotImplementedError


class _Cotangents:
    """The cotangent state of the backward sweep ``(g, acc, buffers)``: the carry cotangent, the accumulated
    parameter cotangents, and the ``xs``-cotangent buffers; and one backward step on it."""

    def __init__(self, executor: Executor, consts, init, xs, perturbed, cotangents, last_leaves):
        self.executor = executor
        ct_final, ct_ys = cotangents
        self.ct_final = ct_final
        self.invariant = [leaf for leaf, v in zip(last_leaves, executor.varies) if not v]
        self.carry_avals, self.const_avals = _avals(init), _avals(consts)
        self.carry_tree = jax.tree_util.tree_structure(init)
        x_leaves, self.x_tree = jax.tree_util.tree_flatten(xs)
        self.x_leaf_avals = _avals(x_leaves)
        self.x_avals = [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in x_leaves]
        self.xs = xs
        self.y_leaves, self.y_tree = jax.tree_util.tree_flatten(ct_ys)
        self.n_residuals = len(executor.layout.internal.avals) - len(self.carry_avals)
        # Cotangents are carried for differentiated float leaves only (carry leaves always: they chain steps).
        consts_perturbed, _, xs_perturbed = perturbed
        self.const_wanted = [_is_float(a) and p for a, p in zip(self.const_avals, consts_perturbed)]
        self.x_wanted = [_is_float(a) and p for a, p in zip(self.x_avals, xs_perturbed)]
        self.carry_wanted = [_is_float(a) for a in self.carry_avals]

    def carry_of(self, leaves):
        return jax.tree_util.tree_unflatten(self.carry_tree, leaves)

    def _ct_y(self, k):
        index = self.executor._index(k)
        return jax.tree_util.tree_unflatten(
            self.y_tree,
            [
                np.zeros(a.shape[1:], jax.dtypes.float0)
                if a.dtype == jax.dtypes.float0
                else jax.lax.dynamic_index_in_dim(a, index, keepdims=False)
                for a in self.y_leaves
            ],
        )

    def start(self, t, last_leaves):
        """The state after step ``t``, back-propagated from the residuals the forward sweep kept."""
        acc = [jnp.zeros(a.shape, a.dtype) for a in _select(self.const_wanted, self.const_avals)]
        buffers = _varying([jnp.zeros((t, *a.shape), a.dtype) for a in _select(self.x_wanted, self.x_avals)], self.xs)
        g = _select(self.carry_wanted, jax.tree_util.tree_leaves(self.ct_final))
        return self.back(last_leaves, t, (g, acc, buffers))

    def back(self, leaves, k, state):
        """Back-propagate step k from its residual leaves."""
        g, acc, buffers = state
        ct_out = (self.carry_of(_fill(self.carry_wanted, g, self.carry_avals)), self._ct_y(k))
        pullback = jax.tree_util.tree_unflatten(self.executor.plan.sizes.pullback_tree, leaves)
        ct_consts, ct_carry, ct_x = pullback(ct_out)
        acc = [a + c for a, c in zip(acc, _select(self.const_wanted, jax.tree_util.tree_leaves(ct_consts)))]
        index = self.executor._index(k)
        buffers = [
            jax.lax.dynamic_update_index_in_dim(buf, c.astype(buf.dtype), index, 0)
            for buf, c in zip(buffers, _select(self.x_wanted, jax.tree_util.tree_leaves(ct_x)))
        ]
        return _select(self.carry_wanted, jax.tree_util.tree_leaves(ct_carry)), acc, buffers

    def stored_leaves(self, pools, offset, k, starts=None):
        """The residual leaves of step k, from its internal state stored at quantum ``offset`` (or at element
        ``starts`` of each pool)."""
        item = self.executor.layout.internal.load(pools, offset, starts)
        stored, carry = iter(item[: self.n_residuals]), item[self.n_residuals :]
        shared = iter(self.invariant)
        x = jax.tree_util.tree_leaves(self.executor._x(self.xs, k))  # residuals that are x: read back, not stored
        executor = self.executor
        return [
            x[j] if j >= 0 else (carry[c] if c >= 0 else next(stored)) if v else next(shared)
            for v, j, c in zip(executor.varies, executor.from_x, executor.from_carry)
        ]

    def back_stored(self, pools, offset, k, state, starts=None):
        """Back-propagate step k from its internal state stored at quantum ``offset`` (or element ``starts``)."""
        return self.back(self.stored_leaves(pools, offset, k, starts), k, state)

    def finish(self, state):
        g, acc, buffers = state
        ct_xs = jax.tree_util.tree_unflatten(self.x_tree, _fill(self.x_wanted, buffers, self.x_leaf_avals))
        return (
            _fill(self.const_wanted, acc, self.const_avals),
            self.carry_of(_fill(self.carry_wanted, g, self.carry_avals)),
            ct_xs,
        )
