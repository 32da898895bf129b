"""``memjax.scan``: ``jax.lax.scan`` whose gradient runs an optimal BPTT schedule inside a memory budget.

The forward pass is an ordinary scan. Under reverse-mode differentiation a ``jax.custom_vjp`` takes over:

1. *Plan.* The step is closure-converted (closed-over arrays become explicit, differentiable arguments), its
   carry and VJP residuals are measured (:mod:`memjax._measure`), the budget is turned into hidden-state units
   and ``alpha``, and :func:`memjax.solve` gives the policy; its :class:`~memjax.Schedule` is the program.
2. *Primal sweep.* One ``lax.scan`` runs every step once, as ``lax.scan`` would, and writes the hidden and
   internal states that the schedule's first sweep stores into per-dtype pools (:mod:`memjax._pool`). The last
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
from typing import Callable

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from memjax._budget import Budget, format_bytes, parse_budget
from memjax._cost import estimate_step_costs, predict_seconds
from memjax._keys import carry_keys_as_data, data_to_keys
from memjax._measure import StepSizes, measure_step
from memjax._pool import PoolLayout
from memjax._schedule import Op, Schedule
from memjax._solver import KINDS, Policy, _quantize, min_memory, solve

__all__ = ["scan", "plan_scan", "ScanPlan", "SCAN_KINDS"]

SCAN_KINDS = KINDS + ("auto",)



@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """Everything decided before running: sizes, the budget in bytes and units, the policy and its schedule.

    Attributes:
      length: number of steps.
      sizes: measured sizes of one step (:class:`memjax._measure.StepSizes`).
      budget_bytes: the budget for stored states, the initial carry included.
      policy: the solved :class:`~memjax.Policy` (``None`` for ``store_all``, which runs ``jax.lax.scan``).
      quantum_bytes: bytes of one quantum of the schedule's stack, as the pools lay it out.
      predictions: with ``kind="auto"``, ``(kind, forward evaluations, predicted seconds)`` of each candidate
        (:mod:`memjax._cost`); the plan is the fastest.
    """

    length: int
    kind: str
    sizes: StepSizes
    budget_bytes: int
    policy: Policy | None
    quantum_bytes: int
    predictions: tuple = ()  # kind="auto": (kind, forward evaluations, predicted seconds) per candidate

    @property
    def store_all_bytes(self) -> int:
        """What standard BPTT stores: the initial carry and the internal state of every step but the last."""
        return self.sizes.carry_bytes + max(self.length - 1, 0) * self.sizes.internal_bytes

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


def plan_scan(f, init, xs=None, length=None, *, memory=None, kind: str = "msm",
              checkpoint_policy=None) -> ScanPlan:
    """Decide how :func:`scan` will differentiate ``f`` over ``xs``: sizes, budget, policy and schedule.

    Arguments are those of :func:`scan`; nothing is run. See :func:`memjax.explain` for a readable report.
    """
    return _prepare(f, init, xs, length, memory, kind, checkpoint_policy)[0]


def _prepare(f, init, xs, length, memory, kind, checkpoint_policy=None):
    """Check the arguments, closure-convert ``f`` and plan: returns ``(plan, step, consts)``."""
    f, init, _ = carry_keys_as_data(f, init)  # a no-op when scan already did it
    if not isinstance(kind, str) or kind not in SCAN_KINDS:
        raise ValueError(f"kind={kind!r} is not a policy kind; use one of {', '.join(map(repr, SCAN_KINDS))}.")
    budget = parse_budget(memory)
    _check_leaves(init, "init")
    _check_leaves(xs, "xs")
    length = _check_xs(xs, length)
    # Example arguments for tracing the step: the arrays themselves where they are traced (their types carry
    # what abstract shapes do not, such as shard_map's varying axes), shapes and dtypes otherwise.
    x0 = jax.tree_util.tree_map(lambda a: a[0] if length and isinstance(a, jax.core.Tracer)
                                else jax.ShapeDtypeStruct(np.shape(a)[1:], jnp.result_type(a)), xs)
    carry = jax.tree_util.tree_map(lambda a: a if isinstance(a, jax.core.Tracer)
                                   else jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), init)
    _check_carry(f, carry, x0)
    if checkpoint_policy is not None:  # an internal state holds only what the policy saves
        f = jax.checkpoint(f, policy=checkpoint_policy)
    step, consts = _hoist(f, carry, x0)
    sizes = measure_step(lambda p, c, x: step(c, x, *p), consts, carry, x0)
    if kind == "auto":
        return _plan_fastest(length, sizes, budget, step, consts, carry, x0), step, consts
    return _plan(length, kind, sizes, budget), step, consts


def _plan_fastest(length, sizes, budget, step, consts, carry, x0) -> ScanPlan:
    """``kind="auto"``: the candidate policy with the least predicted time within the budget."""
    if budget is None and length > 1:  # the default budget is the MSM default: at most 2 forwards per step
        budget = Budget("bytes", _plan(length, "msm", sizes, None).budget_bytes)
    avals = [jax.ShapeDtypeStruct(np.shape(c), jnp.result_type(c)) for c in consts]
    costs = estimate_step_costs(lambda p, c, x: step(c, x, *p), avals, carry, x0)
    plans = []
    for kind in ("msm", "hsm", "chen", "ism", "store_all"):
        try:
            plan = _plan(length, kind, sizes, budget)
        except ValueError:
            continue  # below what this kind can work with
        plans.append((predict_seconds(plan.schedule, costs, sizes.carry_bytes, sizes.internal_bytes, length),
                      plan))
    if not plans:
        return _plan(length, "msm", sizes, budget)  # raises the error that names the least budget
    predictions = tuple((plan.kind, plan.forward_count, seconds) for seconds, plan in plans)
    best = min(plans, key=lambda pair: pair[0])[1]
    return dataclasses.replace(best, predictions=predictions)


def _hoist(f, carry, x0):
    """Closure conversion: ``f(c, x) = step(c, x, *consts)`` with every array ``f`` closes over in ``consts``.

    Unlike ``jax.closure_convert``, which hoists only closed-over tracers, every constant is hoisted, concrete
    or traced, so that a step is measured and planned the same way whether or not it is being differentiated
    (``memjax.explain`` outside ``jax.grad`` then reports exactly what ``memjax.scan`` uses inside it).
    Constants that are not differentiated get no cotangent (see the runner's symbolic zeros).
    """
    closed = jax.make_jaxpr(f)(carry, x0)
    out_tree = jax.tree_util.tree_structure(jax.eval_shape(f, carry, x0))

    def step(c, x, *consts):
        out = jex.jaxpr_as_fun(jex.ClosedJaxpr(closed.jaxpr, consts))(*jax.tree_util.tree_leaves((c, x)))
        return jax.tree_util.tree_unflatten(out_tree, out)

    return step, list(closed.consts)


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
    s, i = (1, None) if kind in ("hsm", "recompute") else _quantize(alpha)
    # One quantum in bytes, as the pools lay states out (at least carry / s and internal / i).
    quantum = max(PoolLayout(sizes.carry_avals, sizes.variant_avals, s, i).quantum_bytes, 1)
    least = min_memory(length, None, alpha=alpha, kind=kind)
    least_bytes = round(least * s) * quantum
    if budget is None:  # the least memory for at most one extra forward pass
        units = 1.0 if kind == "recompute" else min_memory(length, 2 * length, alpha=alpha, kind=kind)
        budget_bytes = round(units * s) * quantum
    else:
        budget_bytes = budget.resolve(store_all)
    if budget_bytes < least_bytes:
        raise ValueError(
            f"memory={format_bytes(budget_bytes)} ({budget_bytes} bytes) is below the least that kind={kind!r} "
            f"needs for this step over length={length}: {least_bytes} bytes ({format_bytes(least_bytes)}; the "
            f"carry is {sizes.carry_bytes} bytes, an internal state {sizes.internal_bytes} bytes). "
            f"Pass memory>={least_bytes}.")
    # In hidden-state units of s quanta each, so the solver's floor(units * s) is exactly budget // quantum.
    policy = solve(length, (budget_bytes // quantum) / s, alpha=alpha, kind=kind)
    return ScanPlan(length, kind, sizes, budget_bytes, policy, quantum)


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False,
         unroll: int | bool = 1, *, memory=None, kind: str = "msm", checkpoint_policy=None):
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
        itself, over ``jax.checkpoint(f, policy=checkpoint_policy)`` when a policy is given) or ``"recompute"``;
        or ``"auto"``: of msm, hsm, chen, ism and store_all, the one with the least predicted time within the
        budget, from per-step costs that XLA's cost analysis estimates (:mod:`memjax._cost`).
      checkpoint_policy: what an internal state holds. ``None``: every residual of the step's VJP. A
        ``jax.checkpoint`` policy (e.g. ``jax.checkpoint_policies.save_only_these_names("gates")`` with
        ``jax.ad_checkpoint.checkpoint_name`` in the step) keeps only what it saves and recomputes the rest
        inside each backward step: a smaller internal state, a smaller ``alpha``, and more internal states
        within the same budget.

    Returns:
      ``(carry, ys)``, as ``jax.lax.scan``.

    Raises:
      ValueError: for a bad ``memory`` or ``kind``, a budget below the least the policy can use (the message
        gives it in bytes), or ``xs``/``length`` that disagree.
      TypeError: if ``f``'s carry output differs from its input in structure, shape or dtype.
    """
    f, init, key_impls = carry_keys_as_data(f, init)
    plan, step, consts = _prepare(f, init, xs, length, memory, kind, checkpoint_policy)
    try:
        if plan.policy is None:  # store_all: lax.scan, whose residuals are the internal states measured
            body = f if checkpoint_policy is None else jax.checkpoint(f, policy=checkpoint_policy)
            carry, ys = jax.lax.scan(body, init, xs, plan.length, reverse=reverse, unroll=unroll)
        else:
            carry, ys = _Runner(step, plan, reverse, unroll)(consts, init, xs)
        return (carry if key_impls is None else data_to_keys(carry, key_impls)), ys
    except TypeError as error:
        if "forward-mode autodiff" in str(error):  # JAX's refusal to jvp a custom_vjp function
            raise TypeError(
                "memjax.scan cannot be differentiated in forward mode (jax.jvp, jax.linearize, jax.jacfwd) "
                "because its gradient is a jax.custom_vjp. Use jax.lax.scan for forward-mode derivatives, or "
                "jax.jvp of jax.grad (forward-over-reverse) for Hessian-vector products.") from error
        raise


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _zero_cotangent(aval):
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
    return [next(it) if w else _zero_cotangent(aval) for aval, w in zip(avals, wanted)]


@dataclasses.dataclass(frozen=True)
class _Tables:
    """The schedule as integer tables for the executor (offsets in quanta, -1 for none).

    Primal sweep, one entry per step ``k = 1..t``: ``save_hidden[k-1]`` is where ``h_{k-1}`` goes before step
    ``k``, ``save_internal[k-1]`` where ``I_k`` goes. Backward sweep: the schedule's actions after the first
    backward step, ``FREE`` dropped (it only matters to the accounting), restoring the initial carry coded as
    ``RESTORE_HIDDEN`` with offset -1.
    """

    save_hidden: np.ndarray
    save_internal: np.ndarray
    op: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    offset: np.ndarray


def _compile_tables(schedule: Schedule) -> _Tables:
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
    keep = schedule.op[rest] != Op.FREE
    return _Tables(save_hidden, save_internal, *(column[rest][keep] for column in (
        schedule.op, schedule.start, schedule.stop, schedule.offset)))


def _when(predicate, update, operand):
    """``update(operand)`` if ``predicate`` else ``operand``, as a ``lax.cond`` (XLA keeps it in place)."""
    return jax.lax.cond(predicate, update, lambda operand: operand, operand)


class _Runner:
    """The custom-VJP executor of one planned scan.

    Each row of the backward table is run as one ``lax.cond`` per kind of action, each either updating its
    part of the state or passing it through. XLA then updates the pools and the cotangent buffers in place; a
    single ``lax.switch`` over all actions made it copy the whole pool on every row (measured: 35 s against
    0.1 s for 3000 rows over a 50 MiB pool), and branches that return zeros for what they do not compute
    would materialise parameter-sized arrays on every row.
    """

    def __init__(self, step, plan: ScanPlan, reverse: bool, unroll):
        self.step = step
        self.plan = plan
        self.reverse = reverse
        self.unroll = unroll
        sizes = plan.sizes
        self.varies, self.stored, self.from_x = sizes.varies, sizes.stored, sizes.from_x
        schedule = plan.schedule
        internal = None if plan.kind in ("hsm", "recompute") else schedule.internal_quanta
        self.layout = PoolLayout(sizes.carry_avals, sizes.variant_avals, schedule.hidden_quanta, internal)
        self.tables = _compile_tables(schedule)
        self.perturbed = None  # which inputs are differentiated: set by the forward rule, read by the backward

        @jax.custom_vjp
        def run(consts, init, xs):
            return jax.lax.scan(lambda c, x: step(c, x, *consts), init, xs, plan.length, reverse=reverse,
                                unroll=unroll)

        run.defvjp(self._forward, self._backward, symbolic_zeros=True)
        self.run = run

    def __call__(self, consts, init, xs):
        return self.run(consts, init, xs)

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

    # -- forward -------------------------------------------------------------------------------------------
    def _forward(self, consts, init, xs):
        # With symbolic zeros the rule sees which inputs are differentiated (CustomVJPPrimal.perturbed); the
        # backward sweep then computes no cotangent that nobody asked for (e.g. for xs when only parameters
        # are differentiated), which also spares the (length, *x.shape) buffer of xs cotangents.
        is_primal = lambda leaf: isinstance(leaf, CustomVJPPrimal)  # noqa: E731
        self.perturbed = tuple(
            [leaf.perturbed for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_primal)]
            for tree in (consts, init, xs))
        consts, init, xs = jax.tree_util.tree_map(lambda leaf: leaf.value, (consts, init, xs), is_leaf=is_primal)
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

    # -- backward ------------------------------------------------------------------------------------------
    def _backward(self, residuals, cotangents):
        consts, init, xs, pools, last_leaves = residuals
        ct_final, ct_ys = jax.tree_util.tree_map(
            lambda ct: _zero_cotangent(ct.aval) if isinstance(ct, SymbolicZero) else ct,
            cotangents, is_leaf=lambda ct: isinstance(ct, SymbolicZero))
        t, tables, layout = self.plan.length, self.tables, self.layout
        invariant = [leaf for leaf, v in zip(last_leaves, self.varies) if not v]
        carry_avals, const_avals = _avals(init), _avals(consts)
        carry_tree = jax.tree_util.tree_structure(init)
        x_leaves, x_tree = jax.tree_util.tree_flatten(xs)
        x_avals = [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in x_leaves]
        y_leaves, y_tree = jax.tree_util.tree_flatten(ct_ys)
        n_residuals = len(layout.internal.avals) - len(carry_avals)

        # Cotangents are carried for differentiated float leaves only (carry leaves always: they chain steps).
        consts_perturbed, _, xs_perturbed = self.perturbed
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
            op, a, b, offset = action
            safe = jnp.maximum(offset, 0)
            register = _when(op == Op.RESTORE_HIDDEN, lambda r: carry_of([
                jnp.where(offset < 0, first, saved) for first, saved in
                zip(jax.tree_util.tree_leaves(init), layout.hidden.load(pools, safe))]), register)
            register = _when(op == Op.RESTORE_INTERNAL,
                             lambda r: carry_of(layout.internal.load(pools, offset)[n_residuals:]), register)
            register = _when(op == Op.ADVANCE, lambda r: jax.lax.fori_loop(
                a, b, lambda k, c: self._step(consts, c, self._x(xs, k + 1))[0], r), register)
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

        # Step t, from the residuals kept by the primal sweep; then the table.
        acc = [jnp.zeros(a.shape, a.dtype) for a in _select(const_wanted, const_avals)]
        buffers = _varying([jnp.zeros((t, *a.shape), a.dtype) for a in _select(x_wanted, x_avals)], xs)
        g = _select(carry_wanted, jax.tree_util.tree_leaves(ct_final))
        state = (init, pools, back(last_leaves, t, (g, acc, buffers)))
        if tables.op.size:
            state, _ = jax.lax.scan(row, state, (tables.op, tables.start, tables.stop, tables.offset))
        g, acc, buffers = state[2]
        ct_xs = jax.tree_util.tree_unflatten(x_tree, _fill(x_wanted, buffers, _avals(x_leaves)))
        return _fill(const_wanted, acc, const_avals), carry_of(_fill(carry_wanted, g, carry_avals)), ct_xs
