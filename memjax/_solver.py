"""Optimal recomputation policies for backpropagation through time: ``solve``, ``min_memory`` and ``Policy``.

Implements the dynamic programs of Gruslys, Munos, Danihelka, Lanctot and Graves, "Memory-Efficient
Backpropagation Through Time" (NeurIPS 2016, arXiv:1606.03401): BPTT-HSM, also known as binomial checkpointing or
"revolve" (Griewank and Walther, ACM TOMS 26(1), 2000), BPTT-ISM, and BPTT-MSM, which memjax solves with one
refinement (spent checkpoints) that makes it optimal under the machine model; Chen et al.'s segments
(arXiv:1604.06174) are one more kind. The recurrences, conventions and proofs are in ``docs/solver.md``; pure
Python and numpy, no JAX.

This module answers queries: it checks arguments, turns memory into quanta, picks the cheapest way to an exact
answer (a closed form, the two-forward policy, or a DP table from the cache), and wraps it in a :class:`Policy`
whose schedule is emitted on demand. Elsewhere: closed forms and bounds in :mod:`memjax._closed_forms`, the DP
solver in :mod:`memjax._dp_kernels` (tables in :mod:`memjax._columns`), emission in :mod:`memjax._emit`.

Notation (``docs/conventions.md``): ``t`` is a number of steps, ``m`` a budget in units of one hidden state; in
quanta, ``s`` and ``i`` are a hidden and an internal state and ``q`` the budget (``i = ceil(alpha s)`` rounded
up, ``q = floor(m s)`` rounded down, so a policy never needs more memory than it was given).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from memjax._caches import cached, register
from memjax._closed_forms import (
    _chain_cost,
    _chain_decide,
    _chen_decide,
    _chen_memory,
    _chen_segment,
    _cost_bound,
    _full_quanta,
    _hsm_decide,
    _ism_decide,
    _recompute_decide,
    _store_all_decide,
    _two_forward_decide,
    _two_forward_length,
    hsm_cost,
    ism_cost,
)
from memjax._columns import _INF, Columns
from memjax._dp_kernels import ColumnSolver
from memjax._emit import Decide, emit_schedule
from memjax._schedule import Schedule

__all__ = ["KINDS", "Policy", "check_kind", "solve", "min_memory", "two_forward_policy", "hsm_cost", "ism_cost"]

KINDS = ("msm", "hsm", "ism", "chen", "store_all", "recompute")
_MAX_QUANTA_PER_UNIT = 8
# A cached table grows at least geometrically (so that growing sequences of queries cost O(log) solves) while
# the grown table stays below this many cells (of work: tables are stored as knots); larger ones are solved as asked.
_GROWTH_CELLS = 1 << 26
_QUERY_LENGTH = 2048  # from this length on, a query gets a table capped for it alone (see _exact_table)
# Beyond this length, MSM below the two-forward memory is planned in closed form (Policy.optimal is False): the
# exact table takes seconds at 10^4 steps and minutes at 10^5.
EXACT_LENGTH = 10_000

# The process-wide table cache: the shared table per (s, i, hidden, internal), growing as queries need, and the
# last table capped for one long query (_exact_table), per the same key. memjax.clear_caches() empties both.
_TABLES: dict[tuple, Columns] = {}
_QUERY_TABLES: dict[tuple, Columns] = {}
register(_TABLES.clear)
register(_QUERY_TABLES.clear)


def _solve_table(
    length: int,
    quanta: int,
    s: int,
    i: int,
    hidden: bool,
    internal: bool,
    cap_slack: int = _INF,
    query: bool = False,
) -> Columns:
    """Solve the N / F recurrences (HSM / ISM when one option is disabled) for all ``t <= length``, ``q <= quanta``
    (:class:`memjax._dp_kernels.ColumnSolver`), every cell capped at ``t + cap_slack`` or, with ``query``, at the
    caps of the one query ``(length, quanta)`` (docs/solver.md, facts 14 and 15). A query of length ``T`` whose
    cost is at most ``B`` is answered exactly, decisions included, with ``cap_slack = B + 1 - T``;
    :meth:`Columns.exact` tells which cells are exact.

    Ties go to nothing, then hidden, then internal, then spent, then the smallest split; from ``_full_quanta`` on
    a cell is at its floor with split 1 (fact 1). Every table the solver builds is solved here (tests count
    solves through this function).
    """
    return ColumnSolver(length, quanta, s, i, hidden, internal, cap_slack, query).solve()


def _table(
    length: int,
    quanta: int,
    s: int,
    i: int,
    hidden: bool,
    internal: bool,
    cap_slack: int,
    cell: tuple[int, int] | None = None,
) -> Columns:
    """The DP table, exact for cells below ``t + cap_slack``, from the process-wide cache when one that covers the
    request was already solved (a cached table also serves ``cell = (t, q)`` if that cell is exact in it).

    A table that must grow covers both requests and at least doubles the dimension that fell short (quanta
    capped at ``_full_quanta`` of the new length, beyond which columns are constant; the cap slack), as long as the
    grown table has at most ``_GROWTH_CELLS`` cells: a growing sequence of queries then costs O(log) solves, and
    alternating queries never solve twice.
    """
    key = (s, i, hidden, internal)
    cached_table = _TABLES.get(key)
    covers = cached_table is not None and cached_table.length >= length and cached_table.quanta >= quanta
    if covers and (cached_table.cap_slack >= cap_slack or (cell is not None and cached_table.exact(*cell))):
        return cached_table
    if cached_table is not None:
        old_length, old_quanta = cached_table.length, cached_table.quanta
        new_length, new_quanta = max(length, old_length), max(quanta, old_quanta)
        grown_length = max(new_length, 2 * old_length) if length > old_length else new_length
        full = _full_quanta(grown_length, s, i, internal)
        grown_quanta = max(new_quanta, min(2 * old_quanta, full)) if quanta > old_quanta else new_quanta
        if (grown_length + 1) * (grown_quanta + 1) <= _GROWTH_CELLS:
            new_length, new_quanta = grown_length, grown_quanta
        if cap_slack > cached_table.cap_slack:  # the cap grows geometrically as well
            cap_slack = min(max(cap_slack, 2 * cached_table.cap_slack), _INF)
        length, quanta, cap_slack = new_length, new_quanta, max(cap_slack, cached_table.cap_slack)
    table = _solve_table(length, quanta, s, i, hidden, internal, cap_slack)
    _TABLES[key] = table
    return table


def _exact_table(t: int, q: int, s: int, i: int) -> Columns:
    """An MSM table in which cell ``(t, q)`` and every sub-problem of its optimal policy are exact: capped one above the
    cost bound (docs/solver.md, facts 5, 14 and 15).

    Queries of ``_QUERY_LENGTH`` steps or more, unless the shared or the last such table already holds the cell
    exactly, get a table of their own, capped for that query alone (fact 15: lower caps, fewer cells to solve),
    kept until the next one. Shorter ones share the growing cached table, so that sweeps over budgets solve few
    tables; it is capped at ``2t`` first (the common case, which later queries reuse), and only if the cell reaches
    that at the bound."""
    if t >= _QUERY_LENGTH:
        key = (s, i, True, True)
        for table in (_TABLES.get(key), _QUERY_TABLES.get(key)):
            if table is not None and table.length >= t and table.quanta >= q and table.exact(t, q):
                return table
        cap_slack = _cost_bound(t, q, s, i) + 1 - t
        _QUERY_TABLES[key] = _solve_table(t, q, s, i, True, True, cap_slack, query=True)
        return _QUERY_TABLES[key]
    bound = _cost_bound(t, q, s, i)
    for cap_slack in sorted({min(t + 1, bound + 1 - t), bound + 1 - t}):
        table = _table(t, q, s, i, True, True, cap_slack, cell=(t, q))
        if table.exact(t, q):
            return table
    raise AssertionError(f"cost of ({t}, {q}) above its bound {bound}")  # pragma: no cover


def _table_decide(table: Columns, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return table.decide(b - a, q, freeable)


def _quantize(alpha: float) -> tuple[int, int]:
    """Quanta ``(s, i)`` of a hidden and an internal state: ``i / s >= alpha``, as close as a small ``s`` allows."""
    best = None
    for s in range(1, _MAX_QUANTA_PER_UNIT + 1):
        i = max(1, math.ceil(alpha * s - 1e-9))
        excess = i / s - alpha
        if best is None or excess < best[0] - 1e-12:
            best = (excess, s, i)
        if excess <= 1e-9 * max(1.0, alpha):
            break
    return best[1], best[2]


def check_kind(kind, kinds: tuple[str, ...] = KINDS) -> None:
    """Raise a ``ValueError`` that names ``kind`` and lists ``kinds`` unless ``kind`` is one of them.

    ``kinds`` is :data:`KINDS` for a plan made without a step, and ``SCAN_KINDS`` (``KINDS`` and ``"auto"``, which
    measures the step) for :func:`memjax.scan`.
    """
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"kind={kind!r} is not a policy kind; use one of {', '.join(map(repr, kinds))}.")


def _check_arguments(length, memory, alpha, kind) -> tuple[int, float, float]:
    check_kind(kind)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive integer number of steps, got {length!r}.")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive number (internal / hidden state size), got {alpha!r}.") from None
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number (internal / hidden state size), got {alpha}.")
    try:
        memory = float(memory)
    except (TypeError, ValueError):
        raise ValueError(f"memory must be a number of hidden-state units, got {memory!r}.") from None
    if math.isnan(memory) or memory <= 0:
        raise ValueError(f"memory must be a positive number of hidden-state units, got {memory}.")
    return int(length), memory, alpha  # memory may be inf: unlimited


@dataclasses.dataclass(frozen=True)
class Policy:
    """An optimal (for its kind) recomputation policy for ``length`` steps within ``memory`` units.

    Attributes:
      kind: one of :data:`KINDS`.
      length: number of steps ``t``.
      memory: the budget, in units of one hidden state (an internal state costs ``alpha`` units); ``inf`` when
        unlimited (``budget_quanta`` is then the memory that stores every state the kind can use).
      alpha: size of an internal state over the size of a hidden state.
      cost: forward step evaluations ``C(t, m)``, the first forward pass included; ``t`` backward steps are
        always made and not counted.
      optimal: whether ``cost`` is known to be the optimum of ``kind``. It is, except for MSM beyond
        ``EXACT_LENGTH`` steps within less memory than the two-forward policy needs, where the exact dynamic
        program would take minutes, and for :func:`two_forward_policy` (the default budget, planned without a
        table): the policy is then the cheapest of the chain, binomial, ISM and Chen policies (docs/solver.md,
        fact 5), within ``cost / lower_bound`` of the optimum.
    """

    kind: str
    length: int
    memory: float
    alpha: float
    cost: int
    hidden_quanta: int = dataclasses.field(repr=False)
    internal_quanta: int = dataclasses.field(repr=False)
    budget_quanta: int = dataclasses.field(repr=False)
    _decide: Decide = dataclasses.field(repr=False, compare=False)  # the policy (memjax._emit)
    optimal: bool = True
    _binomial: bool = dataclasses.field(default=False, repr=False, compare=False)  # decide is HSM's (memjax._emit)
    # decide depends on a sub-problem's length and budget alone, and never spends its start (binomial ones do)
    _by_length: bool = dataclasses.field(default=False, repr=False, compare=False)

    @property
    def lower_bound(self) -> int:
        """A lower bound on the optimal cost of ``kind`` within ``memory``: ``cost`` for an optimal policy; for
        the others (``optimal=False``) the two-forward bound ``max(t, 2t - 1 - M)`` (docs/solver.md, fact 4),
        so that the policy is at most ``cost / lower_bound`` times the optimum."""
        if self.optimal:
            return self.cost
        slots = (self.budget_quanta - self.hidden_quanta) // self.internal_quanta
        return max(self.length, 2 * self.length - 1 - slots)

    @property
    def forwards_per_step(self) -> float:
        """``cost / length``: 1 for standard BPTT, 2 for one extra forward pass."""
        return self.cost / self.length

    @property
    def peak_memory(self) -> float:
        """Most memory the policy holds at once, in hidden-state units (never more than ``memory``)."""
        return self.schedule().peak_memory

    def schedule(self) -> Schedule:
        """The policy flattened into a static :class:`~memjax.Schedule` (built once, then cached)."""
        return _schedule_of(self)


@cached(maxsize=64)
def _schedule_of(policy: Policy) -> Schedule:
    return _emit(policy)


def _emit(policy: Policy, runs: bool = True) -> Schedule:
    """``policy`` flattened by :func:`memjax._emit.emit_schedule` (``runs=False``: one action at a time)."""
    return emit_schedule(
        policy.length,
        policy.hidden_quanta,
        policy.internal_quanta,
        policy.budget_quanta,
        policy._decide,
        binomial=policy._binomial,
        by_length=policy._by_length,
        runs=runs,
    )


def solve(length: int, memory: float, *, alpha: float = 1.0, kind: str = "msm") -> Policy:
    """The cheapest policy of ``kind`` that back-propagates through ``length`` steps within ``memory`` units.

    Args:
      length: number of steps ``t >= 1``.
      memory: budget in units of one hidden state, the starting state included; need not be an integer.
        ``float("inf")`` means unlimited: the policy gets the memory that stores everything ``kind`` can use
        (every internal state, or every hidden state for ``"hsm"``), and ``Policy.memory`` is ``inf``.
      alpha: size of an internal state (residuals and the carry they resume from) over a hidden state's.
      kind: ``"msm"`` (BPTT-MSM, optimal over hidden and internal states), ``"hsm"`` (hidden states only;
        binomial checkpointing), ``"ism"`` (internal states only), ``"chen"`` (equal segments, Chen et al.),
        ``"store_all"`` (standard BPTT) or ``"recompute"`` (store nothing; ``t (t + 1) / 2`` forwards).

    Returns:
      A :class:`Policy`. Results are cached: the same query never solves twice in one process (until
      ``memjax.clear_caches()``).

    Raises:
      ValueError: for a bad argument (an unknown or unhashable ``kind`` included), or a budget below the least
        that ``kind`` can work with (the message gives that least budget).
    """
    t, m, alpha = _check_arguments(length, memory, alpha, kind)  # before the cache: arguments must be hashable
    return _solve(t, m, alpha, kind)


@cached(maxsize=256)
def _solve(t: int, m: float, alpha: float, kind: str) -> Policy:
    if kind in ("hsm", "recompute"):
        s, i = 1, _INF
    else:
        s, i = _quantize(alpha)
    if math.isinf(m):  # unlimited: enough to store every state the kind can use
        q = _full_quanta(t, s, i, kind not in ("hsm", "recompute"))
    else:
        q = math.floor(m * s + 1e-9)
    least = min_memory(t, None, alpha=alpha, kind=kind)
    if q < round(least * s):
        raise ValueError(
            f"memory={m:g} units is below the least that kind={kind!r} needs for length={t} "
            f"(alpha={alpha:g}): {least:g} units. Raise memory to at least {least:g}"
            + (", or use kind='msm'." if kind != "msm" else ".")
        )

    if kind == "recompute":
        return Policy(kind, t, m, alpha, t * (t + 1) // 2, s, i, q, _recompute_decide)
    if kind == "store_all":
        return Policy(kind, t, m, alpha, t, s, i, q, _store_all_decide)
    if kind == "hsm":
        return Policy(kind, t, m, alpha, hsm_cost(t, q), s, i, q, _hsm_decide, _binomial=True, _by_length=True)
    if kind == "chen":
        segment, cost = _chen_segment(t, q, s, i)
        return Policy(kind, t, m, alpha, cost, s, i, q, functools.partial(_chen_decide, t, segment))
    return _internal_policy(kind, t, m, alpha, s, i, q, exact=t <= EXACT_LENGTH)


def _internal_policy(kind: str, t: int, m: float, alpha: float, s: int, i: int, q: int, exact: bool) -> Policy:
    """MSM's or ISM's policy within ``q`` quanta: a closed form where one is optimal, else the exact table, or,
    without ``exact``, the cheapest closed-form policy (``optimal=False``)."""
    slots = (q - s) // i
    if t <= _two_forward_length(slots):  # the lower bound is reached: no table needed (docs/solver.md, fact 4)
        decide = functools.partial(_two_forward_decide, s, i)
        return Policy(kind, t, m, alpha, max(t, 2 * t - 1 - slots), s, i, q, decide, _by_length=True)
    if kind == "ism" or i < s:  # in closed form (docs/solver.md, fact 16); MSM equals ISM when i < s (fact 2)
        decide = functools.partial(_ism_decide, s, i)
        return Policy(kind, t, m, alpha, ism_cost(t, slots), s, i, q, decide, _by_length=True)
    if not exact:
        cost, decide, binomial, by_length = _closed_form_policy(t, q, s, i)
        return Policy(kind, t, m, alpha, cost, s, i, q, decide, optimal=False, _binomial=binomial, _by_length=by_length)
    table = _exact_table(t, q, s, i)
    return Policy(kind, t, m, alpha, table.cost(t, q), s, i, q, functools.partial(_table_decide, table))


def _closed_form_policy(t: int, q: int, s: int, i: int) -> tuple[int, Decide, bool, bool]:
    """The cheapest MSM policy known in closed form (docs/solver.md, fact 5: its cost is ``_cost_bound``):
    ``(cost, decide, binomial, by_length)`` (see ``Policy``)."""
    chain = _chain_cost(t, q, s, i)
    internal = ism_cost(t, (q - s) // i)
    binomial = hsm_cost(t, q // s)
    segment, chen = _chen_segment(t, q, s, i)
    if chain <= min(internal, binomial, chen):
        return chain, functools.partial(_chain_decide, s, i), False, False
    if internal <= min(binomial, chen):
        return internal, functools.partial(_ism_decide, s, i), False, True
    if binomial <= chen:
        return binomial, functools.partial(_binomial_decide, s), True, True
    return chen, functools.partial(_chen_decide, t, segment), False, False


def _bound_width(t: int, max_cost: int, s: int, i: int) -> int:
    """The least width (quanta) at which the closed-form bound (:func:`_cost_bound`) is at most ``max_cost``. The
    bound holds at full width (its cost is the floor t there), so the search ends on a width where it holds."""
    lo, hi = s, _full_quanta(t, s, i, True)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _cost_bound(t, mid, s, i) <= max_cost else (mid + 1, hi)
    return hi


def two_forward_policy(length: int, *, alpha: float = 1.0, kind: str = "msm") -> Policy:
    """A policy of ``kind`` with at most two forward evaluations per step (``2 * length``), in about the least
    memory that allows it, found without a table: ``memjax.scan``'s default budget.

    For HSM, ISM, Chen and MSM with internal states smaller than hidden ones, the least memory and the policy are
    closed forms (:func:`min_memory`, :func:`solve`). For MSM otherwise, the exact least needs a table (0.1-0.5 s
    at 10^3 steps); this is instead the cheapest closed-form policy (docs/solver.md, fact 5) at the least memory
    where it makes at most ``2 * length`` forwards: at most one hidden state above the exact least on every
    length and alpha tried (docs/solver.md, section 6). Its ``Policy.optimal`` is True where its cost meets the
    two-forward lower bound (fact 4), False where the optimum for its memory is not known.

    Args:
      length: number of steps ``t >= 1``.
      alpha: size of an internal state over a hidden state's.
      kind: one of :data:`KINDS` but ``"recompute"``, which makes ``t (t + 1) / 2`` forwards at any memory.

    Returns:
      A :class:`Policy` with ``cost <= 2 * length`` (cached, as :func:`solve`'s).

    Example::

      policy = memjax.planning.two_forward_policy(1000, alpha=7)
      policy.memory, policy.cost   # (115.0, 1999): min_memory(1000, 2000, alpha=7) is 114.0, from a table
    """
    t, _, alpha = _check_arguments(length, 1.0, alpha, kind)
    if kind == "recompute" and t > 2:
        raise ValueError(
            f"kind='recompute' makes t (t + 1) / 2 forwards at any memory: no two-forward policy for length={t}."
        )
    return _two_forward_policy(t, alpha, kind)


@cached(maxsize=64)
def _two_forward_policy(t: int, alpha: float, kind: str) -> Policy:
    s, i = _quantize(alpha)
    if kind != "msm" or i < s or t < 2:
        return _solve(t, min_memory(t, 2 * t, alpha=alpha, kind=kind), alpha, kind)
    q = _bound_width(t, 2 * t, s, i)
    policy = _internal_policy(kind, t, q / s, alpha, s, i, q, exact=False)
    # A closed form that meets the two-forward lower bound (fact 4) is optimal.
    return dataclasses.replace(policy, optimal=policy.optimal or policy.cost == policy.lower_bound)


def _binomial_decide(s: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    """Binomial checkpointing (HSM) with ``q // s`` hidden states of ``s`` quanta each."""
    return _hsm_decide(a, b, q // s, freeable)


def min_memory(length: int, max_cost: int | None = None, *, alpha: float = 1.0, kind: str = "msm") -> float:
    """The least memory, in hidden-state units, for which ``kind`` needs at most ``max_cost`` forward evaluations.

    ``max_cost = 2 * length`` asks for at most one extra forward pass; ``None`` asks for the least memory with
    which ``kind`` works at all (one unit for the starting state, except for ``store_all`` and ``chen``). For MSM
    beyond ``EXACT_LENGTH`` steps, it is the least memory for which :func:`solve`'s policy, in closed form there
    (``Policy.optimal``), needs at most ``max_cost``.

    Raises:
      ValueError: if no memory suffices (``max_cost < length`` for any kind; below ``2 length - 1`` for HSM).
    """
    t, _, alpha = _check_arguments(length, 1.0, alpha, kind)
    if kind in ("hsm", "recompute"):
        s, i = 1, _INF
    else:
        s, i = _quantize(alpha)
    floor_cost = {"hsm": 2 * t - 1 if t > 1 else t, "recompute": t * (t + 1) // 2}.get(kind, t)
    if kind == "chen":
        floor_cost = t
    if max_cost is None:
        max_cost = _INF
    if max_cost < floor_cost:
        raise ValueError(
            f"max_cost={max_cost} is below the least possible cost {floor_cost} of kind={kind!r} for length={t}."
        )
    if kind == "recompute":
        return 1.0
    if kind == "store_all":
        return (s + i * (t - 1)) / s
    if kind == "chen":
        segment = np.arange(1, t + 1)
        cost = 2 * t - (t - (-(-t // segment) - 1) * segment)
        return float(np.min(np.where(cost <= max_cost, _chen_memory(t, segment, s, i), _INF))) / s
    if kind == "hsm":
        lo, hi = 1, max(t, 1)
        while lo < hi:  # hsm_cost is non-increasing in m
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if hsm_cost(t, mid) <= max_cost else (mid + 1, hi)
        return float(lo)
    if max_cost >= t * (t + 1) // 2:
        return 1.0
    if kind == "ism" or i < s:  # in closed form (fact 16), non-increasing in the slots (fact 6)
        lo, hi = 0, t - 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ism_cost(t, mid) <= max_cost else (mid + 1, hi)
        return float(s + i * lo) / s
    # MSM from here on. The table's cost grows with its width, so solve it only as wide as the answer can be: the
    # least width at which a known policy (_cost_bound, docs/solver.md fact 5) makes at most max_cost forwards.
    hi = _bound_width(t, max_cost, s, i)
    if t > EXACT_LENGTH:  # solve() plans these by the same bound (_closed_form_policy)
        return float(hi) / s
    table = _table(t, hi, s, i, hidden=True, internal=True, cap_slack=max_cost + 1 - t)
    lo = s
    while lo < hi:  # more memory never costs more (docs/solver.md, fact 6; cells above max_cost may be capped at
        mid = (lo + hi) // 2  # max_cost + 1 or more)
        lo, hi = (lo, mid) if table.cost(t, mid) <= max_cost else (mid + 1, hi)
    return float(lo) / s
