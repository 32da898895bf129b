"""Costs known without a table, and the policies that reach them (pure Python and numpy).

* :func:`hsm_cost`: binomial checkpointing (BPTT-HSM) in closed form, and an optimal split (``docs/solver.md``,
  fact 3);
* :func:`ism_cost`: BPTT-ISM in closed form, and an optimal split (fact 16);
* :func:`_two_forward_length`: how far the two-forward lower bound of MSM and ISM is reached (fact 4), and the
  policy that reaches it;
* Chen's equal segments (:func:`_chen_segment`);
* :func:`_cost_bound`: upper bounds on the MSM optimum (fact 5), which cap the DP tables;
* the decisions of the kinds that need no table (``"hsm"``, ``"recompute"``, ``"store_all"``, ``"chen"`` and the
  two-forward policy), in the form the schedule emitter reads (:data:`memjax._emit.Decide`).

Notation (``docs/conventions.md``): ``t`` is a number of steps, ``q`` a budget in quanta, ``s`` and ``i`` the
quanta of a hidden and of an internal state; ``M = (q - s) // i`` internal states fit besides the start.
"""

from __future__ import annotations

import math

import numpy as np

from memjax._caches import cached, register
from memjax._columns import _HIDDEN, _INF, _INTERNAL, _NOTHING

__all__ = ["hsm_cost", "ism_cost"]


def hsm_cost(length: int, memory: int) -> int:
    """Closed form of BPTT-HSM (binomial checkpointing), paper eq. 3 and Griewank (1992).

    ``C(t, m) = (r + 1) t - binom(m + r, r - 1)`` with ``r`` the smallest integer such that
    ``binom(m + r, r) >= t``; ``C(0, m) = 0``, ``C(1, m) = 1``, ``C(t, 1) = t (t + 1) / 2`` (docs/solver.md,
    fact 3).

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


@cached(maxsize=1 << 16)  # binomial checkpointing asks for the same (t, m) at many positions
def _hsm_split(t: int, m: int) -> int:
    """An optimal first checkpoint ``y`` for BPTT-HSM (t >= 2, m >= 2).

    Optimal splits form a range (fact 3); the ends of Griewank's range are tried first and a scan settles any
    doubt.
    """
    best = hsm_cost(t, m)
    r, _ = _repetitions(t, m)
    # The left part (m slots) computes its steps at most r - 1 more times and the right part (m - 1 slots) at most
    # r: the ends of that range, then the ends of the range clipped to where both parts need that many.
    low, high = t - math.comb(m - 1 + r, r), math.comb(m + r - 1, r - 1)
    full_left = math.comb(m + r - 2, r - 2) if r >= 2 else 0
    full_right = t - math.comb(m + r - 2, r - 1)
    candidates = (low, high, 1, max(low, full_left), min(high, full_right))
    for y in candidates:
        y = min(max(y, 1), t - 1)
        if y + hsm_cost(y, m) + hsm_cost(t - y, m - 1) == best:
            return y
    for y in range(1, t):  # pragma: no cover - the candidates are proven optimal on the tested grid
        if y + hsm_cost(y, m) + hsm_cost(t - y, m - 1) == best:
            return y
    raise AssertionError("no optimal split found")  # pragma: no cover


def _hsm_costs(t: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`hsm_cost` of int64 arrays (``t, m < 2^31``), with ``r``, ``binom(m + r, r)`` and ``binom(m + r - 1,
    r - 1)`` (where ``t >= 2``, ``m >= 2``; anything elsewhere): ``(cost, r, beta, previous)``."""
    t, m = np.broadcast_arrays(np.asarray(t, np.int64), np.asarray(m, np.int64))
    r, beta, previous = np.zeros_like(t), np.ones_like(t), np.ones_like(t)
    binomial = m >= 2  # m = 1 has its own closed form, and the loop would run t times
    short = (beta < t) & binomial
    while short.any():  # beta stays below t (m + r) / r < 2^62
        r = r + short
        previous = np.where(short, beta, previous)
        beta = np.where(short, beta * (m + r) // np.maximum(r, 1), beta)
        short = (beta < t) & binomial
    # binom(m + r, r - 1) = beta r / (m + 1), exact, and beta r < t (m + r) < 2^62.
    cost = (r + 1) * t - beta * r // (m + 1)
    cost = np.where(m == 1, t * (t + 1) // 2, cost)
    return np.where(t <= 1, t, cost), r, beta, previous


def _hsm_splits(t: np.ndarray, m: np.ndarray) -> np.ndarray:
    """:func:`_hsm_split` of arrays (``t >= 2``, ``2 <= m``) where one of its first three candidates is optimal (the
    same candidates in the same order), 0 elsewhere."""
    t, m = np.broadcast_arrays(np.asarray(t, np.int64), np.asarray(m, np.int64))
    best, r, beta, previous = _hsm_costs(t, m)
    # Griewank's range ends: t - binom(m - 1 + r, r) (Pascal: beta - previous) and binom(m + r - 1, r - 1).
    split = np.zeros_like(t)
    for candidate in (t - (beta - previous), previous, np.ones_like(t)):
        y = np.clip(candidate, 1, t - 1)
        optimal = (split == 0) & (y + _hsm_costs(y, m)[0] + _hsm_costs(t - y, m - 1)[0] == best)
        split = np.where(optimal, y, split)
    return split


def _binomial_unit_chain(steps: int, q: int, s: int) -> int:
    """How many nested sub-problems, from ``steps`` steps and ``q`` quanta on, binomial checkpointing (``q // s``
    slots of ``s`` quanta) splits at 1 (stores the next hidden state, then solves the rest with one slot less)
    while not every hidden state fits: where the budget is large, a chain of hundreds of thousands of them."""

    def unit(t: int, quanta: int) -> bool:
        slots = quanta // s
        return t >= 3 and slots >= 2 and quanta < s * (t - 1) and _hsm_split(t, min(slots, t)) == 1

    if not unit(steps, q):
        return 0
    if not unit(steps - 1, q - s):  # most chains are this short: no arrays for them
        return 1
    levels, done = 64, 0
    while True:
        j = done + np.arange(levels, dtype=np.int64)
        t, quanta = steps - j, q - j * s
        slots = quanta // s
        valid = (t >= 3) & (slots >= 2) & (quanta < s * (t - 1))
        split = np.zeros_like(t)
        split[valid] = _hsm_splits(t[valid], np.minimum(slots[valid], t[valid]))
        broken = np.flatnonzero(~valid | (split != 1))
        if broken.size:
            return done + int(broken[0])
        done, levels = done + levels, 2 * levels


def ism_cost(length: int, slots: int) -> int:
    """Closed form of BPTT-ISM (internal states only), docs/solver.md, fact 16.

    With ``f(M, r) = binom(M + 1 + r, r) - 1`` the most steps that ``M`` slots back-propagate computing each step at
    most ``r`` times, and ``r`` the smallest integer with ``f(M, r) >= t``:
    ``C(t, M) = r t - binom(M + 1 + r, r - 1) + r``. In the paper's convention, whose ``m`` counts the internal
    state being back-propagated too, ``m = M + 1``: ``C(10, 2) = 24``, ``C(100, 5) = 320``.

    Args:
      length: number of steps ``t >= 0``.
      slots: internal states that fit besides the start state, ``M = (q - s) // i >= 0``; the internal state of the
        step being back-propagated is transient and not counted.

    Returns:
      The least number of forward step evaluations, the first forward pass included.
    """
    t, m = int(length), int(slots)
    if t <= 1:
        return t
    r = _ism_repetitions(t, m)
    return r * t - math.comb(m + 1 + r, r - 1) + r


def _ism_reach(m: int, r: int) -> int:
    """``f(M, r)``: the longest sequence ``M`` internal slots back-propagate computing each step at most ``r``
    times (fact 16)."""
    return math.comb(m + 1 + r, r) - 1


def _ism_repetitions(t: int, m: int) -> int:
    """The smallest ``r`` with ``f(M, r) >= t``."""
    r, reach = 0, 0
    while reach < t:
        r += 1
        reach = (reach + 1) * (m + 1 + r) // r - 1  # binom(M + 1 + r, r) from binom(M + r, r - 1)
    return r


def _ism_split(t: int, m: int) -> int:
    """An optimal internal split ``y`` for BPTT-ISM beyond the floor (``t > M + 1 >= 2``): the left part (``y - 1``
    steps, ``M`` slots) as long as ``r - 1`` computations per step allow, the right part (``t - y`` steps, ``M - 1``
    slots) at least as long as ``r - 1`` need (fact 16)."""
    r = _ism_repetitions(t, m)
    return 1 + min(_ism_reach(m, r - 1), t - 1 - _ism_reach(m - 1, r - 1))


def _ism_decide(s: int, i: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    """The decisions of optimal BPTT-ISM (fact 16) with ``(q - s) // i`` internal slots."""
    t, slots = b - a, (q - s) // i
    if slots < 1:
        return _NOTHING, 0
    if t <= slots + 1:
        return _INTERNAL, 1  # every internal state fits (fact 1)
    return _INTERNAL, _ism_split(t, slots)


def _full_quanta(t: int, s: int, i: int, internal: bool) -> int:
    """Quanta from which ``C(t, q)`` is at its floor (fact 1): ``t`` with internal states, ``2t - 1`` without."""
    return s + i * (t - 1) if internal else s * t


def _two_forward_length(slots: int) -> int:
    """The longest ``t`` for which :func:`_two_forward_decide` reaches ``C(t, q) = max(t, 2t - 1 - M)``, the lower
    bound of every MSM and ISM policy, with ``M = slots = (q - s) // i``: ``A(M) = 1 + M (M + 1) / 2 + 2M``
    (docs/solver.md, fact 4)."""
    return 1 + slots * (slots + 1) // 2 + 2 * slots


def _two_forward_decide(s: int, i: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    """The decisions of the policy of :func:`_two_forward_length` (fact 4): Chen's segments with internal states
    as checkpoints, each as long as the memory left at its turn allows (never a hidden state, so never
    freeable)."""
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
    """The segment length with the fewest forwards (``2t - last segment``) that fits ``q`` quanta, and those
    forwards."""
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


def _hsm_decide(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    t = b - a
    if q <= 1:
        return _NOTHING, 0
    return _HIDDEN, _hsm_split(t, min(q, t))


def _recompute_decide(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return _NOTHING, 0


def _store_all_decide(a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    return _INTERNAL, 1


def _cost_bound(t: int, q: int, s: int, i: int) -> int:
    """An upper bound on the cost of MSM with ``q >= s`` quanta (fact 5): the cheapest of the optimal ISM policy
    (fact 16), binomial checkpointing, Chen's segments and :func:`_chain_cost`.

    The closer the bound, the lower the caps of a table solved for it (facts 14 and 15), and the fewer its cells.
    """
    return min(ism_cost(t, (q - s) // i), hsm_cost(t, q // s), _chen_segment(t, q, s, i)[1], _chain_cost(t, q, s, i))


def _chain_cost(t: int, q: int, s: int, i: int) -> int:
    """The cost of the MSM chain policy (fact 5, :func:`_chain_decide`): a chain of hidden checkpoints, each followed
    by the rest of the sequence and then its left part, which fits at its floor (``y = M + 1`` steps: two forwards
    per step), until the rest fits the two-forward policy (:func:`_two_forward_length`).

    Where the chain cannot reach that far, its first left parts are as long as needed, solved by the two-forward
    policy (three forwards per step); without room for an internal state, binomial checkpointing ends it.
    """
    cost = 0
    while True:
        slots = (q - s) // i
        if t <= _two_forward_length(slots):
            return cost + max(t, 2 * t - 1 - slots)
        if slots < 1 or q - s < s:
            return cost + hsm_cost(t, q // s)
        y = _chain_split(t, q, s, i)
        cost += y + max(y, 2 * y - 1 - slots)
        t, q = t - y, q - s


def _chain_split(t: int, q: int, s: int, i: int) -> int:
    """The chain's next hidden checkpoint for ``t`` steps beyond the two-forward length of ``q`` quanta (with room
    for a hidden and an internal state): the left part at its floor, ``M + 1`` steps, or as long as the chain of
    floors after it needs to reach the end, up to the two-forward length."""
    slots = (q - s) // i
    y = slots + 1
    if t > _chain_reach(q, s, i):  # too long for floors alone: a longer left part, two-forward
        y = max(y, min(_two_forward_length(slots), t - _chain_reach(q - s, s, i)))
    return y


_REACH: dict[tuple[int, int, int], int] = {}
register(_REACH.clear)


def _chain_reach(q: int, s: int, i: int) -> int:
    """The longest sequence a chain of left parts at their floors covers from ``q`` quanta: the two-forward length
    of ``q``, or a floor of ``M + 1`` steps and the reach of ``q - s``."""
    widths = []
    while (q, s, i) not in _REACH and q >= s:
        widths.append(q)
        q -= s
    for width in reversed(widths):
        slots = (width - s) // i
        reach = _two_forward_length(slots)
        if width - s >= s:
            reach = max(reach, slots + 1 + _REACH[width - s, s, i])
        _REACH[width, s, i] = reach
    return _REACH[widths[0], s, i] if widths else _REACH.get((q, s, i), 0)


def _chain_decide(s: int, i: int, a: int, b: int, q: int, freeable: bool) -> tuple[int, int]:
    """The decisions of the chain policy (:func:`_chain_cost`): a hidden checkpoint at :func:`_chain_split`, the
    two-forward policy where it reaches, binomial checkpointing of ``q // s`` hidden states without room for an
    internal state (spent checkpoints are not used)."""
    t, slots = b - a, (q - s) // i
    if t <= _two_forward_length(slots):
        return _two_forward_decide(s, i, a, b, q, freeable)
    if slots < 1 or q - s < s:
        return _hsm_decide(a, b, q // s, freeable)
    return _HIDDEN, _chain_split(t, q, s, i)
