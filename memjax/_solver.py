"""Optimal recomputation policies for backpropagation through time (pure Python and numpy, no JAX).

Implements the dynamic programs of Gruslys, Munos, Danihelka, Lanctot and Graves, "Memory-Efficient
Backpropagation Through Time" (NeurIPS 2016, arXiv:1606.03401), also known for hidden states alone as binomial
checkpointing or "revolve" (Griewank and Walther, ACM TOMS 26(1), 2000), and Chen et al.'s sqrt(t) segments
(arXiv:1604.06174) as a member of the same family, with one refinement of the mixed recurrence (below) that makes
it optimal under the machine model.

Cost ``C(t, m)`` is the number of forward step evaluations (the first forward pass included) needed to
back-propagate through ``t`` steps while holding at most ``m`` units of memory, one unit being one hidden state
(the scan carry) and one internal state (the step's VJP residuals together with the carry they resume from)
costing ``alpha`` units. The state a sub-problem starts from counts towards its memory. The paper's recurrences
(section 3; ``../shared/reference/bptt.md``), with ``1 <= y < t``:

* store nothing:          ``t (t + 1) / 2``
* store ``h_y`` (HSM):    ``Q_h = y + C(y, m) + C(t - y, m - 1)``
* store ``I_y`` (ISM):    ``Q_i = y + C(y - 1, m) + C(t - y, m - alpha)``
* BPTT-MSM:               ``C(t, m) = min(t (t + 1) / 2, min_y Q_h, min_y Q_i)``; BPTT-HSM drops ``Q_i``,
  BPTT-ISM drops ``Q_h``; ``C(0, m) = 0`` and ``C(1, m) = 1`` for ``m >= 1``, infinite below.

**memjax's refinement of BPTT-MSM (spent checkpoints).** The paper's MSM recurrence charges a sub-problem's start
state for the whole sub-problem. When that start is a hidden checkpoint ``h_a`` stored by the parent, it is last
loaded to compute ``I_{a+1}``; freeing it right then and storing ``I_{a+1}`` in its place saves one unit for the
rest of the sub-problem. Exhaustive search over all schedules finds such schedules strictly cheaper: for
``t = 7, alpha = 3, m = 4`` the paper's recurrence gives 14 forwards and the optimum is 13 (store ``h_2, h_4,
h_5``; back-propagate steps 7, 6, 5; load ``h_2``, free it, store ``I_3`` in its unit; steps 4, 3; then ``I_1``
from ``h_0`` for steps 2, 1). memjax solves two tables, ``N`` (the start cannot be freed: ``h_0``, or a start inside
a stored internal state) and ``F`` (the start is a freeable hidden checkpoint):

* ``N(t, m) = min(t (t + 1) / 2, min_y [y + N(y, m) + F(t - y, m - 1)],
  min_y [y + N(y - 1, m) + N(t - y, m - alpha)])``
* ``F(t, m) = min(t (t + 1) / 2, min_y [y + F(y, m) + F(t - y, m - 1)],
  min_y [y + F(y - 1, m) + N(t - y, m - alpha)], 1 + N(t - 1, m - alpha + 1))``, the last ("spent") option for
  ``t >= 2`` and ``m >= alpha``: restore ``h_a``, free it, store ``I_{a+1}`` in its place, solve the rest from
  ``I_{a+1}``, then back-propagate step ``a + 1`` from it

and ``C_MSM(t, m) = N(t, m)``: equal to exhaustive search on every tested case (all budgets for ``t <= 8``, small
budgets for ``t <= 12``), never above the paper's value, and strictly below it from ``t = 7`` on for some budgets.
HSM and ISM are unchanged (without internal states ``F = N``; without hidden states nothing is ever spent).

For hidden states alone the closed form holds (paper, eq. 3; Griewank's binomial bound): with ``r`` the
smallest integer such that ``binom(m + r, r) >= t``, ``C_HSM(t, m) = (r + 1) t - binom(m + r, r - 1)``.

For MSM and ISM a lower bound holds too: with ``M`` internal states besides the start, ``C(t, m) >= 2t - 1 - M``
(the steps computed only once are those whose internal states are all held when step ``t`` is back-propagated).
Up to ``t = 1 + M (M + 1) / 2 + 2M`` a policy of internal-state checkpoints reaches it (:func:`_two_forward_length`),
and ``solve`` answers there without a table.

Non-integer ``alpha`` is handled exactly by counting memory in *quanta*: a hidden state is ``s`` quanta and an
internal state ``ceil(alpha * s)`` quanta for a small ``s``. Rounding is always upwards for the internal state
and downwards for the budget, so a policy never needs more memory than it was given.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from memjax._dp_kernels import _HIDDEN, _INF, _INTERNAL, _NOTHING, _SPENT, Columns, solve_columns
from memjax._schedule import Op, Schedule

__all__ = ["KINDS", "Policy", "solve", "min_memory", "hsm_cost"]

KINDS = ("msm", "hsm", "ism", "chen", "store_all", "recompute")
_MAX_QUANTA_PER_UNIT = 8
# A cached table grows at least geometrically (so that growing sequences of queries cost O(log) solves) while
# the grown table stays below this many cells (of work: tables are stored as knots); larger ones are solved as asked.
_GROWTH_CELLS = 1 << 26
_QUERY_LENGTH = 2048  # from this length on, a query gets a table capped for it alone (see _exact_table)

# A decision for the segment (a, b] given q quanta and whether its start is a freeable hidden checkpoint:
# (what to store, split y).
Decide = Callable[[int, int, int, bool], "tuple[int, int]"]


def hsm_cost(length: int, memory: int) -> int:
    """Closed form of BPTT-HSM (binomial checkpointing), paper eq. 3 and Griewank (1992).

    ``C(t, m) = (r + 1) t - binom(m + r, r - 1)`` with ``r`` the smallest integer such that
    ``binom(m + r, r) >= t``; ``C(0, m) = 0``, ``C(1, m) = 1``, ``C(t, 1) = t (t + 1) / 2``.

    Args:
      length: number of steps ``t >= 0``.
      memory: hidden-state slots ``m >= 1``, the slot of the starting state included.

    Returns:
      The least number of forward step evaluations, the first forward pass included.
    """
    t, m = int(length), int(memory)
    if t <= 1:
        return t
    if m == 1:
        return t * (t + 1) // 2
    r, beta = _repetitions(t, m)
    return (r + 1) * t - math.comb(m + r, r - 1)


def _repetitions(t: int, m: int) -> tuple[int, int]:
    """The smallest ``r`` with ``beta = binom(m + r, r) >= t`` (m >= 2), and that beta."""
    r, beta = 0, 1
    while beta < t:
        r += 1
        beta = beta * (m + r) // r
    return r, beta


def _hsm_split(t: int, m: int) -> int:
    """An optimal first checkpoint ``y`` for BPTT-HSM (t >= 2, m >= 2).

    Optimal splits form a range; the ends of Griewank's range are tried first and a scan settles any doubt.
    """
    best = hsm_cost(t, m)
    r, _ = _repetitions(t, m)
    candidates = (t - math.comb(m - 1 + r, r), math.comb(m + r - 1, r - 1), 1)
    for y in candidates:
        y = min(max(y, 1), t - 1)
        if y + hsm_cost(y, m) + hsm_cost(t - y, m - 1) == best:
            return y
    for y in range(1, t):  # pragma: no cover - the candidates are proven optimal on the tested grid
        if y + hsm_cost(y, m) + hsm_cost(t - y, m - 1) == best:
            return y
    raise AssertionError("no optimal split found")  # pragma: no cover


_TABLES: dict[tuple, Columns] = {}
_QUERY_TABLES: dict[tuple, Columns] = {}  # the last table capped for one query (_exact_table), per (s, i, options)


def _table(
    length: int,
    quanta: int,
    s: int,
    i: int,
    hidden: bool,
    internal: bool,
    slack: int,
    cell: tuple[int, int] | None = None,
) -> Columns:
    """The DP table, exact for cells below ``slack + t``, from the process-wide cache when one that covers the
    request was already solved (a cached table also serves ``cell = (t, q)`` if that cell is exact in it).

    A table that must grow covers both requests and at least doubles the dimension that fell short (quanta
    capped at ``_full_quanta`` of the new length, beyond which columns are constant; the slack), as long as the
    grown table has at most ``_GROWTH_CELLS`` cells: a growing sequence of queries then costs O(log) solves, and
    alternating queries never solve twice.
    """
    key = (s, i, hidden, internal)
    cached = _TABLES.get(key)
    covers = cached is not None and cached.length >= length and cached.quanta >= quanta
    if covers and (cached.slack >= slack or (cell is not None and cached.exact(*cell))):
        return cached
    if cached is not None:
        old_length, old_quanta = cached.length, cached.quanta
        new_length, new_quanta = max(length, old_length), max(quanta, old_quanta)
        grown_length = max(new_length, 2 * old_length) if length > old_length else new_length
        full = _full_quanta(grown_length, s, i, internal)
        grown_quanta = max(new_quanta, min(2 * old_quanta, full)) if quanta > old_quanta else new_quanta
        if (grown_length + 1) * (grown_quanta + 1) <= _GROWTH_CELLS:
            new_length, new_quanta = grown_length, grown_quanta
        if slack > cached.slack:  # the cap grows geometrically as well
            slack = min(max(slack, 2 * cached.slack), _INF)
        length, quanta, slack = new_length, new_quanta, max(slack, cached.slack)
    table = _solve_table(length, quanta, s, i, hidden, internal, slack)
    _TABLES[key] = table
    return table


def _cost_bound(t: int, q: int, s: int, i: int, hidden: bool) -> int:
    """An upper bound on the cost of MSM (``hidden``) or ISM with ``q >= s`` quanta: the cheapest of binomial
    checkpointing and, for MSM, Chen's segments and :func:`_chain_cost`.

    Revolve with ``q // s`` hidden-state slots is an MSM policy; with ``(q - s) // i + 1`` slots it is an ISM policy
    too when each checkpoint ``h_y`` is stored as ``I_y`` (same forwards: ``I_y`` is what the forward of step ``y``
    computes; ``I_y`` holds ``h_y``, and step ``y`` is then back-propagated without recomputing it). Chen's scheme
    (``kind="chen"``) is an MSM policy. The closer the bound, the lower the cap of the table (:func:`_exact_table`):
    at t = 10^4 and alpha = 7.5 the chain is within 0.3% of the optimum from 0.2% of store-all up.
    """
    bound = hsm_cost(t, (q - s) // i + 1)
    if hidden:
        bound = min(bound, hsm_cost(t, q // s), _chen_segment(t, q, s, i)[1], _chain_cost(t, q, s, i))
    return bound


def _chain_cost(t: int, q: int, s: int, i: int) -> int:
    """The cost of an MSM policy (an upper bound on the optimum): a chain of hidden checkpoints, each followed by the
    rest of the sequence and then its left part, which fits at its floor (``y = M + 1`` steps with ``M = (q - s)
    // i``: two forwards per step), until the rest fits the two-forward policy (:func:`_two_forward_length`).
    Where the chain cannot reach that far, its first left parts are as long as needed, solved by the two-forward
    policy (three forwards per step); without room for an internal state, binomial checkpointing ends it.

    Each link is the hidden option of the recurrence, ``N(t, q) <= y + N(y, q) + F(t - y, q - s)``, with ``F <=
    N`` (``F`` has every option of ``N`` and more) and ``N(y, q) <= max(y, 2y - 1 - M)`` for ``y <= A(M)``.
    """
    reach = {}  # width -> the longest sequence the chain of floors covers from it, for the widths q - k s
    for width in range(q - (q - s) // s * s, q + 1, s):
        slots = (width - s) // i
        reach[width] = _two_forward_length(slots)
        if width - s >= s:
            reach[width] = max(reach[width], slots + 1 + reach[width - s])
    cost = 0
    while True:
        slots = (q - s) // i
        if t <= _two_forward_length(slots):
            return cost + max(t, 2 * t - 1 - slots)
        if slots < 1 or q - s < s:
            return cost + hsm_cost(t, q // s)
        y = slots + 1  # the left part at its floor
        if t > reach[q]:  # too long for floors alone: a longer left part, two-forward
            y = max(y, min(_two_forward_length(slots), t - reach[q - s]))
        cost += y + max(y, 2 * y - 1 - slots)
        t, q = t - y, q - s


def _exact_table(t: int, q: int, s: int, i: int, hidden: bool) -> Columns:
    """A table in which cell ``(t, q)`` and every sub-problem of its optimal policy are exact (facts 7 and 9 of
    :mod:`memjax._dp_kernels`): capped one above the cost bound.

    Queries of ``_QUERY_LENGTH`` steps or more, unless the shared or the last such table already holds the cell
    exactly, get a table of their own, capped for that query alone (fact 9; 10 to 20% faster to solve at t = 10^4),
    kept until the next one. Shorter ones share the growing cached table, so that sweeps over budgets solve few
    tables; it is capped at ``2t`` first (the common case, which later queries reuse), and only if the cell reaches
    that at the bound."""
    if t >= _QUERY_LENGTH:
        key = (s, i, hidden, True)
        for cached in (_TABLES.get(key), _QUERY_TABLES.get(key)):
            if cached is not None and cached.length >= t and cached.quanta >= q and cached.exact(t, q):
                return cached
        slack = _cost_bound(t, q, s, i, hidden) + 1 - t
        _QUERY_TABLES[key] = _solve_table(t, q, s, i, hidden, True, slack, query=True)
        return _QUERY_TABLES[key]
    bound = _cost_bound(t, q, s, i, hidden)
    for slack in sorted({min(t + 1, bound + 1 - t), bound + 1 - t}):
        table = _table(t, q, s, i, hidden, True, slack, cell=(t, q))
        if table.exact(t, q):
            return table
    raise AssertionError(f"cost of ({t}, {q}) above its bound {bound}")  # pragma: no cover


def _full_quanta(t: int, s: int, i: int, internal: bool) -> int:
    """Quanta from which C(t, q) reaches its floor: ``t`` with internal states, ``2t - 1`` without."""
    return s + i * (t - 1) if internal else s * t


def _solve_table(
    length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool, slack: int = _INF, query: bool = False
) -> Columns:
    """Solve the N / F recurrences (HSM / ISM when one option is disabled) for all ``t <= length``, ``q <= quanta``.

    Column by column in ``q`` (:mod:`memjax._dp_kernels`): each cell minimises over the breakpoints of the
    (piecewise linear) columns instead of over every split, and runs of a column are guessed and then verified
    by the recurrence itself; widths that read the same columns share one; all steps are exact (proofs in that
    module's docstring). Columns are kept as their knots and decisions are recomputed for one cell on demand.
    ``C(t, q)`` equals its floor with split 1 once ``q`` holds every state (``_full_quanta``); ties go to nothing,
    then hidden, then internal, then spent, then the smallest split.
    """
    return solve_columns(length, quanta, s, i, hidden, internal, slack, query)


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


def _check_arguments(length, memory, alpha, kind) -> tuple[int, float, float]:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a policy kind; use one of {', '.join(map(repr, KINDS))}.")
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
    """

    kind: str
    length: int
    memory: float
    alpha: float
    cost: int
    hidden_quanta: int = dataclasses.field(repr=False)
    internal_quanta: int = dataclasses.field(repr=False)
    budget_quanta: int = dataclasses.field(repr=False)
    _decide: Decide = dataclasses.field(repr=False, compare=False)

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


@functools.lru_cache(maxsize=64)
def _schedule_of(policy: Policy) -> Schedule:
    return _emit(policy.length, policy.hidden_quanta, policy.internal_quanta, policy.budget_quanta, policy._decide)


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
      A :class:`Policy`. Results are cached: the same query never solves twice in one process.

    Raises:
      ValueError: for a bad argument (an unknown or unhashable ``kind`` included), or a budget below the least
        that ``kind`` can work with (the message gives that least budget).
    """
    t, m, alpha = _check_arguments(length, memory, alpha, kind)  # before the cache: arguments must be hashable
    return _solve(t, m, alpha, kind)


@functools.lru_cache(maxsize=256)
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
        return Policy(kind, t, m, alpha, t * (t + 1) // 2, s, i, q, _recompute_decider)
    if kind == "store_all":
        return Policy(kind, t, m, alpha, t, s, i, q, _store_all_decider)
    if kind == "hsm":
        return Policy(kind, t, m, alpha, hsm_cost(t, q), s, i, q, _hsm_decider)
    if kind == "chen":
        segment, cost = _chen_segment(t, q, s, i)
        return Policy(kind, t, m, alpha, cost, s, i, q, functools.partial(_chen_decide, t, segment))
    slots = (q - s) // i
    if t <= _two_forward_length(slots):  # the lower bound is reached: no table needed
        return Policy(
            kind, t, m, alpha, max(t, 2 * t - 1 - slots), s, i, q, functools.partial(_two_forward_decide, s, i)
        )
    table = _exact_table(t, q, s, i, hidden=kind == "msm")
    return Policy(kind, t, m, alpha, table.cost(t, q), s, i, q, functools.partial(_table_decide, table))


solve.cache_clear = _solve.cache_clear
solve.cache_info = _solve.cache_info


def _table_decide(table: Columns, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return table.decide(b - a, q, freeable)


def _hsm_decider(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    t = b - a
    if q <= 1:
        return _NOTHING, 0
    return _HIDDEN, _hsm_split(t, min(q, t))


def _recompute_decider(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return _NOTHING, 0


def _store_all_decider(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return _INTERNAL, 1


def _two_forward_length(slots: int) -> int:
    """The longest ``t`` for which :func:`_two_forward_decide` reaches ``C(t, q) = max(t, 2t - 1 - M)``, with
    ``M = (q - s) // i`` internal states besides the start: ``A(M) = 1 + M (M + 1) / 2 + 2M``.

    *Lower bound, any MSM or ISM policy.* The first backward step is step ``t``'s, after every step was computed
    once. A step other than ``t`` that is computed only once must have its internal state stored from then until
    its backward step, so all of them are stored together with the start state when step ``t`` is
    back-propagated: at most ``M`` of them. Every other step is computed at least twice: ``C(t, q) >= 2t - 1 - M``,
    and ``C(t, q) >= t``.

    *Reaching it.* With ``t <= M + 1`` every internal state fits (cost ``t``). Otherwise store ``I_y`` at ``y =
    min(M + 2, t - M)`` (the internal option of the recurrence): the ``y - 1`` steps before it are solved later
    with all ``q`` quanta, at their floor (``y - 1 <= M + 1``), and the ``t - y`` after it with ``M - 1`` slots.
    For ``t <= 2M + 2`` the right part has ``M`` steps, its floor, and the cost is ``y + (y - 1) + M = 2t - 1 -
    M``; beyond, it has ``t - M - 2 <= A(M - 1)`` steps at its own bound ``2 (t - y) - M``, and the cost is again
    ``2t - 1 - M``. Hence ``A(M) = M + 2 + A(M - 1)``, ``A(0) = 1``. Chen's segments with internal states as
    checkpoints, each segment as long as the memory left at its turn allows. At t = 10^4 and alpha = 7.5 this
    covers every budget from 1.4% of store-all memory up.
    """
    return 1 + slots * (slots + 1) // 2 + 2 * slots


def _two_forward_decide(s: int, i: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    """The decisions of the policy of :func:`_two_forward_length` (never a hidden state, so never freeable)."""
    t, slots = b - a, (q - s) // i
    if t <= slots + 1:
        return _INTERNAL, 1  # every internal state fits
    return _INTERNAL, min(slots + 2, t - slots)


def _chen_memory(t: int, segment: np.ndarray, s: int, i: int) -> np.ndarray:
    """Peak quanta of Chen's scheme with segments of ``segment`` steps (the last one possibly shorter)."""
    count = -(-t // segment)
    last = t - (count - 1) * segment
    first_sweep = count * s + (last - 1) * i
    later = np.where(count > 1, (count - 1) * s + (segment - 1) * i, 0)
    return np.maximum(first_sweep, later)


def _chen_segment(t: int, q: int, s: int, i: int) -> tuple[int, int]:
    """The segment length with the fewest forwards (``2t - last segment``) that fits ``q`` quanta."""
    segment = np.arange(1, t + 1)
    last = t - (-(-t // segment) - 1) * segment
    cost = 2 * t - last
    feasible = _chen_memory(t, segment, s, i) <= q
    cost = np.where(feasible, cost, _INF)
    best = int(np.argmin(cost))  # ties: the shortest segment, i.e. the least stored internal states
    return int(segment[best]), int(cost[best])


def _chen_decide(t: int, segment: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    last_start = (-(-t // segment) - 1) * segment
    if b == t and a < last_start:
        return _HIDDEN, segment  # a checkpoint at the next segment boundary
    return _INTERNAL, 1  # inside a segment: store every internal state


def min_memory(length: int, max_cost: int | None = None, *, alpha: float = 1.0, kind: str = "msm") -> float:
    """The least memory, in hidden-state units, for which ``kind`` needs at most ``max_cost`` forward evaluations.

    ``max_cost = 2 * length`` asks for at most one extra forward pass; ``None`` asks for the least memory with
    which ``kind`` works at all (one unit for the starting state, except for ``store_all`` and ``chen``).

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
    hidden = kind == "msm"
    # The table's cost grows with its width, so solve it only as wide as the answer can be: the least width at
    # which a known policy (_cost_bound) makes at most max_cost forwards. The bound holds at full width (its cost
    # is the floor t there), so the search ends on a width where it holds.
    lo, hi = s, _full_quanta(t, s, i, True)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _cost_bound(t, mid, s, i, hidden) <= max_cost else (mid + 1, hi)
    table = _table(t, hi, s, i, hidden=hidden, internal=True, slack=max_cost + 1 - t)
    lo = s
    while lo < hi:  # more memory never costs more: the cost is non-increasing in q (cells above max_cost may be
        mid = (lo + hi) // 2  # capped at max_cost + 1 or more)
        lo, hi = (lo, mid) if table.cost(t, mid) <= max_cost else (mid + 1, hi)
    return float(lo) / s


def _emit(t: int, s: int, i: int, budget: int, decide: Decide) -> Schedule:
    """Flatten a policy's recursion (the ``BP`` procedure of the reference) into a :class:`Schedule`.

    Runs iteratively with an explicit task stack, so the depth of the recursion is not limited by Python's. A
    sub-problem whose start is a hidden checkpoint pushed by an ancestor (never ``h_0``, never a start inside an
    internal state) is *freeable*: its decisions come from the table ``F``, and its spent option restores the
    start, frees it and stores ``I_{a+1}`` at the start's offset; the ancestor's own free of that checkpoint is
    then skipped. Peephole: a ``SAVE_HIDDEN`` immediately followed by a ``FREE`` of the same offset (a checkpoint
    spent right after it was stored, which ties with storing the internal state directly) is dropped, so the
    first sweep never stores a state that it frees at once.
    """
    rows: list[tuple[int, int, int, int]] = []
    register = 0
    top = 0  # quanta in use on the stack (the initial state lives outside it)
    # ("bp", a, b, q, restore, source, owner): owner is None for a fixed start, or the one-element list shared
    # with the ancestor's ("free", offset, size, owner) task of a freeable start: True once the start was spent.
    tasks: list[tuple] = [("bp", 0, t, budget, Op.RESTORE_HIDDEN, -1, None)]

    def free(offset, size):
        nonlocal top
        last = rows[-1] if rows else None
        if last is not None and last[0] == Op.SAVE_HIDDEN and last[3] == offset and size == s:
            rows.pop()  # stored and freed at once: neither is needed
        else:
            rows.append((Op.FREE, 0, size, offset))
        top -= size

    while tasks:
        task = tasks.pop()
        if task[0] == "free":
            _, offset, size, owner = task
            if owner is None or not owner[0]:
                free(offset, size)
            continue
        if task[0] == "backward_stored":
            _, position, offset = task
            rows.append((Op.BACKWARD_STORED, position, position, offset))
            continue
        _, a, b, q, restore, source, owner = task
        n = b - a
        if n == 0:
            continue

        def at(position, start=a, restore=restore, source=source):
            nonlocal register
            if register != start:
                rows.append((restore, start, start, source))
            if position > start:
                rows.append((Op.ADVANCE, start, position, -1))
            register = position

        if n == 1:
            at(a)
            rows.append((Op.BACKWARD, a, a + 1, -1))
            register = None
            continue
        option, y = decide(a, b, q, owner is not None)
        if option == _HIDDEN:
            at(a + y)
            rows.append((Op.SAVE_HIDDEN, a + y, a + y, top))
            checkpoint = [False]
            tasks += [
                ("bp", a, a + y, q, restore, source, owner),
                ("free", top, s, checkpoint),
                ("bp", a + y, b, q - s, Op.RESTORE_HIDDEN, top, checkpoint),
            ]
            top += s
        elif option == _INTERNAL and y < n:
            at(a + y - 1)
            rows.append((Op.SAVE_INTERNAL, a + y - 1, a + y, top))
            register = a + y
            tasks += [
                ("bp", a, a + y - 1, q, restore, source, owner),
                ("free", top, i, None),
                ("backward_stored", a + y, top),
                ("bp", a + y, b, q - i, Op.RESTORE_INTERNAL, top, None),
            ]
            top += i
        elif option == _SPENT:  # the start h_a is loaded for the last time: free it, store I_{a+1} in its place
            if owner is None or top != source + s:
                raise AssertionError("spent option on a start that is not the freeable top of the stack")
            at(a)
            free(source, s)
            owner[0] = True
            rows.append((Op.SAVE_INTERNAL, a, a + 1, source))
            register = a + 1
            tasks += [
                ("free", source, i, None),
                ("backward_stored", a + 1, source),
                ("bp", a + 1, b, q - i + s, Op.RESTORE_INTERNAL, source, None),
            ]
            top = source + i
        else:  # store nothing: re-advance from the start for every step, last step first
            for k in range(b, a, -1):
                at(k - 1)
                rows.append((Op.BACKWARD, k - 1, k, -1))
                register = None
    op, start, stop, offset = (np.array(column, dtype=np.int32) for column in zip(*rows))
    return Schedule(t, op, start, stop, offset, s, i)
