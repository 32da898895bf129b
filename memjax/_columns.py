"""Solved DP tables as columns of knots, and the questions a solved table answers (numpy only).

The solver (:mod:`memjax._dp_kernels`) fills the tables ``N`` and ``F`` of ``docs/solver.md`` one column at a
time; this module holds what it produces and what the planner reads from it:

* :class:`Column`: one column ``C(0), ..., C(length)`` of one table at one width, kept as its knots;
* :class:`Columns`: the solved tables, which answer ``cost(t, q)``, ``exact(t, q)`` and ``decide(t, q,
  freeable)``;
* the caps of a table (``docs/solver.md``, facts 14 and 15): :func:`_query_caps` and :func:`_excess`.

Notation (``docs/conventions.md``): ``t`` is a number of steps, ``q`` a width (a budget in quanta), ``s`` and
``i`` the quanta of a hidden and of an internal state.
"""

from __future__ import annotations

import numpy as np

_INF = 2**60  # the cost of an infeasible cell; three of these still add up without overflowing int64

# Decision codes, in the tie order of docs/solver.md (the lower code wins a tie).
_NOTHING, _HIDDEN, _INTERNAL, _SPENT = 0, 1, 2, 3


class Column:
    """An integer function ``C(0), ..., C(length)`` kept as the knots where its increment changes.

    ``C`` is linear between consecutive knots (``knots[0] = 0``, ``knots[-1] = length``), with increment
    ``slopes[j]`` on piece ``j`` (from ``knots[j]`` to ``knots[j + 1]``); ``convex`` holds the convex breakpoints
    ``{k : C(k + 1) - C(k) > C(k) - C(k - 1)}``, ascending (docs/solver.md, fact 8: the only splits worth
    trying). The running maximum and minimum of the increments ``c(k) = C(k) - C(k - 1)``, which the pruning of
    fact 9 reads, are kept per piece.
    """

    __slots__ = ("knots", "values", "slopes", "convex", "_rising", "_falling", "_pieces")

    def __init__(self, dense: np.ndarray):
        length = dense.shape[0] - 1
        increments = dense[1:] - dense[:-1]
        inner = np.flatnonzero(increments[1:] != increments[:-1]) + 1
        self.knots = np.concatenate([[0], inner, [length]] if length else [[0]]).astype(np.int64)
        if length:
            self.values = dense[self.knots]
            self.slopes = increments[self.knots[:-1]]
        else:
            self.values, self.slopes = dense[:1].copy(), np.zeros(1, np.int64)
        self.convex = inner[increments[inner] > increments[inner - 1]]
        self._rising = np.maximum.accumulate(self.slopes)  # max of the increments up to each piece
        self._falling = np.minimum.accumulate(self.slopes[::-1])[::-1]  # min from each piece on
        # piece lookups by searchsorted over knots[:-1]: positions past the last knot stay in the last piece
        self._pieces = self.knots[:-1] if self.knots.shape[0] > 1 else self.knots

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Column)
            and np.array_equal(self.knots, other.knots)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = object.__hash__

    def _piece(self, k) -> np.ndarray:
        """The piece holding position ``k >= 0`` (the one starting there at a knot; the last one at ``length``)."""
        return self._pieces.searchsorted(k, side="right") - 1

    def at(self, k) -> np.ndarray:
        """``C(k)`` for integer positions ``0 <= k <= length`` (any array shape)."""
        k = np.asarray(k, np.int64)
        piece = self._piece(k)
        return self.values[piece] + self.slopes[piece] * (k - self.knots[piece])

    def increment(self, k) -> np.ndarray:
        """``c(k) = C(k) - C(k - 1)`` for ``1 <= k <= length``."""
        return self.slopes[self._piece(np.asarray(k) - 1)]

    def max_up_to(self, k) -> np.ndarray:
        """``max_{1 <= j <= k} c(j)`` for ``k >= 1``."""
        return self._rising[self._piece(np.asarray(k) - 1)]

    def min_from(self, k) -> np.ndarray:
        """``min_{j >= k} c(j)`` for ``k >= 1``."""
        return self._falling[self._piece(np.asarray(k) - 1)]

    def first_reaching(self, v) -> np.ndarray:
        """The least ``k`` with ``max_{j <= k} c(j) >= v`` (``length + 1`` if none)."""
        return self.knots[np.searchsorted(self._rising, v)] + 1  # the piece starting at knots[j] begins at knots[j] + 1

    def last_at_most(self, v) -> np.ndarray:
        """The greatest ``k`` with ``min_{j >= k} c(j) <= v`` (``0`` if none)."""
        return self.knots[np.searchsorted(self._falling, v, side="right")]  # pieces before it qualify; knots[0] = 0

    def dense(self) -> np.ndarray:
        """All values ``C(0..length)`` as an int64 array."""
        if self.knots.shape[0] == 1:
            return self.values.copy()
        increments = np.repeat(self.slopes, np.diff(self.knots))
        return np.concatenate([self.values[:1], self.values[0] + np.cumsum(increments)])


def full_length(q: int, s: int, i: int, internal: bool) -> int:
    """The longest ``t`` whose every state fits in ``q`` quanta (fact 1: the floor up to there)."""
    return (q - s) // i + 1 if internal else q // s


class Columns:
    """The solved tables ``N`` and ``F`` for all ``t <= length`` and ``q <= quanta``, as shared :class:`Column`\\ s.

    Attributes:
      length, quanta: the table covers ``0 <= t <= length`` and ``0 <= q <= quanta``; ``shape`` is one more each.
      s, i: quanta of a hidden and of an internal state.
      hidden, internal: which split options the recurrence has (both: MSM; hidden only: HSM; internal only: ISM).
      fixed_start: ``N(., q)`` by width ``q`` (``None`` below ``s``): the cost from a start that cannot be freed.
      freeable_start: ``F(., q)`` likewise, from a start that may be spent; ``None`` unless both options are on
        (otherwise ``F = N``).
      cap_slack: every cell is capped at ``t + cap_slack`` (fact 14); ``_INF`` for none.
      query_caps: ``(T, Q, d)`` when the table is capped for the one query ``(T, Q)`` (fact 15), else ``None``.

    ``cost(t, q)`` and ``decide(t, q, freeable)`` are a cell and its decision (recomputed on demand from the
    candidates of fact 8); ``dense()`` expands everything into arrays (for tests and small tables).
    """

    def __init__(
        self, length, quanta, s, i, hidden, internal, fixed_start, freeable_start, cap_slack=_INF, query_caps=None
    ):
        self.length, self.quanta, self.s, self.i = length, quanta, s, i
        self.hidden, self.internal = hidden, internal
        self.fixed_start, self.freeable_start = fixed_start, freeable_start
        self.cap_slack, self.query_caps = cap_slack, query_caps
        self.shape = (length + 1, quanta + 1)
        # Emitting a schedule asks for the same sub-problem's decision many times (a two-forward policy's
        # segments repeat); each answer is a small vectorised evaluation, so keep it.
        self._decided: dict[tuple[int, int, bool], tuple[int, int]] = {}

    def cost(self, t: int, q: int) -> int:
        """``N(t, q)``; ``_INF`` below ``s`` quanta."""
        column = self.fixed_start[min(q, self.quanta)]
        return _INF if column is None else int(column.at(t))

    def exact(self, t: int, q: int) -> bool:
        """Whether ``N(t, q)`` is below its cap (facts 14 and 15): then it and the decisions of its policy, all the
        way down, are those of the uncapped table."""
        q = min(q, self.quanta)
        return self.cost(t, q) <= t + int(_excess(t, q, self.cap_slack, self.query_caps))

    def decide(self, t: int, q: int, freeable: bool) -> tuple[int, int]:
        """The decision ``(option, split)`` of cell ``(t, q)`` (``t >= 2``) of ``F`` if ``freeable`` else ``N``."""
        key = (t, min(q, self.quanta), freeable)
        if key not in self._decided:
            option, split = self.decisions(np.array([t]), key[1], freeable)
            self._decided[key] = int(option[0]), int(split[0])
        return self._decided[key]

    def decisions(self, ts: np.ndarray, q: int, freeable: bool) -> tuple[np.ndarray, np.ndarray]:
        """The decisions ``(option, split)`` of cells ``(t, q)`` for the lengths ``ts`` (all ``>= 2``): the smallest
        key ``(value, option, split)`` over the candidates of fact 8, as in a dense table."""
        s, i = self.s, self.i
        q = min(q, self.quanta)
        ts = np.asarray(ts, np.int64)
        if q < s:
            return np.full(ts.shape, _NOTHING), np.zeros(ts.shape, np.int64)
        both = self.freeable_start is not None
        own = (self.freeable_start if freeable and both else self.fixed_start)[q]
        # One integer per candidate orders by (value, option, split): ((value * 4 + option) * scale + split).
        scale = self.length + 2
        best = (ts * (ts + 1) // 2) * 4 * scale
        terms = []
        if self.hidden and q - s >= s:
            terms.append((_HIDDEN, 0, (self.freeable_start if both else self.fixed_start)[q - s]))
        if self.internal and q - i >= s:
            terms.append((_INTERNAL, 1, self.fixed_start[q - i]))
        column = ts[:, None]
        for option, offset, right in terms:
            ys = np.concatenate(
                [
                    np.broadcast_to(own.convex + offset, (ts.shape[0], own.convex.shape[0])),
                    column - right.convex,
                    np.ones_like(column),
                    column - 1,
                ],
                axis=1,
            )
            ys = np.clip(ys, 1, column - 1)
            values = ys + own.at(ys - offset) + right.at(column - ys)
            best = np.minimum(best, ((values * 4 + option) * scale + ys).min(axis=1))
        if freeable and both and q >= i:
            best = np.minimum(best, ((1 + self.fixed_start[q - i + s].at(ts - 1)) * 4 + _SPENT) * scale + 1)
        option, split = np.divmod(best % (4 * scale), scale)
        floor = ts <= full_length(q, s, i, self.internal)  # fact 1: every state stored, the floor with split 1
        option[floor] = _INTERNAL if self.internal else _HIDDEN
        split[floor] = 1
        return option, split

    def dense(self):
        """``((cost, code, split), freeable)`` as dense ``(length + 1, quanta + 1)`` arrays, ``freeable`` ``None``
        unless ``F`` is a table of its own (the layout of ``tests/test_solver_fast.py``'s reference)."""
        tables = []
        ts = np.arange(2, self.length + 1)
        for freeable in (False, True) if self.freeable_start is not None else (False,):
            cost = np.full(self.shape, _INF, np.int64)
            code = np.zeros(self.shape, np.int8)
            split = np.zeros(self.shape, np.int32)
            for q in range(self.s, self.quanta + 1):
                cost[:, q] = (self.freeable_start if freeable else self.fixed_start)[q].dense()
                if ts.size:
                    code[2:, q], split[2:, q] = self.decisions(ts, q, freeable)
            tables.append((cost, code, split))
        return tables[0], (tables[1] if len(tables) > 1 else None)


def _query_caps(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool, cap_slack: int):
    """The parameters ``(T, Q, d)`` of fact 15's caps for the query ``(length, quanta)``, or ``None`` where they do
    not apply (no cap, no internal states, or spent checkpoints that cost no quanta)."""
    if cap_slack >= _INF // 4 or not internal or (hidden and i == s):
        return None
    return length, quanta, (i - s) if hidden and i > s else i


def _excess(t, q: int, cap_slack: int, query_caps) -> np.ndarray:
    """The largest ``C(t, q) - t`` a cell may have and still be exact: ``cap_slack - 1`` (fact 14), or fact 15's
    ``max(-1, min(E, max(E - t, E - T + t + (Q - q) // d)))`` with ``E = cap_slack - 1``; the cap is one more."""
    if query_caps is None:
        return np.full(np.shape(t), cap_slack - 1, np.int64)
    most = cap_slack - 1
    length, quanta, d = query_caps
    t = np.asarray(t, np.int64)
    return np.maximum(np.minimum(most, np.maximum(most - t, most - length + t + (quanta - q) // d)), -1)
