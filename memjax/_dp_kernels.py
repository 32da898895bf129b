"""Column-wise exact solver of the BPTT-MSM / HSM / ISM recurrences (numpy only; used by ``_solver._solve_table``).

Notation (memory in quanta: a hidden state is ``s``, an internal state ``i``, the start state counts ``s``). Two
tables: ``N`` for a sub-problem whose start cannot be freed (``h_0``, or a start inside a stored internal state)
and ``F`` for one whose start is a hidden checkpoint pushed by its parent, which may be freed at its last load::

    N(0, q) = F(0, q) = 0,  N(1, q) = F(1, q) = 1 for q >= s (infinite below s)
    N(t, q) = min(t (t + 1) / 2,
                  min_y  y + N(y, q)     + F(t - y, q - s)     1 <= y < t   (hidden,   if hidden)
                  min_y  y + N(y - 1, q) + N(t - y, q - i))    1 <= y < t   (internal, if internal)
    F(t, q) = min(t (t + 1) / 2,
                  min_y  y + F(y, q)     + F(t - y, q - s)     1 <= y < t   (hidden)
                  min_y  y + F(y - 1, q) + N(t - y, q - i)     1 <= y < t   (internal)
                  1 + N(t - 1, q - i + s))                     t >= 2, q >= i   (spent)

The last option of ``F`` restores the start ``h_a``, frees it and stores ``I_{a+1}`` in its place, solves the rest
from ``I_{a+1}`` and back-propagates step ``a + 1`` from it. ``F`` is only needed with both options: without
internal states ``F = N`` (nothing can be spent), without hidden states no checkpoint is ever pushed. Ties go to
nothing, then hidden, then internal, then spent, and within an option to the smallest ``y``. For ``q`` at or above
``full(t)`` (every state stored) both tables hold their floor (``t``, or ``2t - 1`` without internal states) with
split 1 and the floor option's code (internal, or hidden without internal states), exactly as the recurrence
gives: nothing, hidden and internal splits ``y >= 2`` cost more than the floor, and internal ``y = 1`` comes before
spent.

When ``i < s`` (an internal state smaller than a hidden one) hidden states are never needed. Take any schedule
and store ``I_j`` instead of ``h_j`` at the forward that computed ``h_j`` (``I_j`` holds ``h_j`` and is smaller).
Where the schedule frees ``h_j`` before step ``j + 1`` is back-propagated, free ``I_j`` then; otherwise
back-propagate step ``j`` from ``I_j`` right after step ``j + 1`` and free it, dropping the schedule's own
backward of step ``j`` and any advance that only led to it. The result holds no more memory and makes no more
forwards, so MSM equals ISM and the hidden option is dropped (the spent option would need the column
``q - i + s > q``, which the column order below cannot give); ``tests/test_solver_fast.py`` checks the equality.

Columns ``N(., q)`` and ``F(., q)`` are computed in increasing ``q`` and, in a column, ``N`` before ``F`` (``F`` reads
``N(., q - i + s)``, the ``N`` column itself when ``i = s``; ``N`` never reads ``F``'s own column). Nine exact
facts make this cheap.

**1. Breakpoint candidates (proof), one min term at a time.** Every split term above has the form
``f(y) = y + L(y - o) + R(t - y)`` on the integers ``1 <= y <= t - 1``, with ``L`` the column being computed
(``N`` or ``F`` of width ``q``), ``o`` in ``{0, 1}``, and ``R`` a column already known (``F(., q - s)`` or
``N(., q - i)``); the spent term is a single value. Fix ``t`` and one term, and write ``l(k) = L(k) - L(k - 1)``
and ``r(k) = R(k) - R(k - 1)``; the increments are ``delta(y) = f(y + 1) - f(y) = 1 + l(y + 1 - o) - r(t - y)``.
Let ``y*`` be the *smallest* minimiser of this term. If ``1 < y* < t - 1`` then ``f(y* - 1) > f(y*) <= f(y* + 1)``,
i.e. ``delta(y* - 1) < 0 <= delta(y*)``, so ``delta(y*) - delta(y* - 1) = (l(y* + 1 - o) - l(y* - o)) +
(r(t - y* + 1) - r(t - y*)) > 0`` and one bracket is positive: ``y* - o`` is a *convex* breakpoint of ``L`` or
``t - y*`` one of ``R``, with ``BP+(G) = {k : G(k + 1) - G(k) > G(k) - G(k - 1)}``. Hence each term's minimum and
smallest minimiser are found among ``{1, t - 1} U (BP+(L) + o) U {t - z : z in BP+(R)}``. Nothing in the argument
depends on which columns ``L`` and ``R`` are, so it holds for each of the four split terms separately; the
minimum of the terms (and the spent value and ``t (t + 1) / 2``), taken in the tie order, is then the exact cell
and decision.

**2. Pruned candidates (proof).** The same two inequalities prune that set. ``delta(y* - 1) < 0`` reads
``r(t - y* + 1) >= l(y* - o) + 2`` and ``delta(y*) >= 0`` reads ``r(t - y*) <= l(y* + 1 - o) + 1``. For an own
breakpoint ``y = b + o`` both conditions constrain the position ``p = t - y`` of ``R``: ``max_{k <= p + 1} r(k) >=
l(b) + 2`` and ``min_{k >= p} r(k) <= l(b + 1) + 1``, so ``b`` is kept for a run of lengths only if some ``p`` of the
run satisfies both envelopes. For a breakpoint ``z`` of ``R`` (``y = t - z``) they constrain ``L`` at ``p = t - z - o``:
``min_{k >= p} l(k) <= r(z + 1) - 2`` and ``max_{k <= p + 1} l(k) >= r(z) - 1``. Ends are always kept. A superset of
the necessary candidates gives the same minimum and smallest minimiser, so the envelopes may be loose.

**3. Guess and verify (proof by induction).** ``L(t)`` depends only on ``L(k)``, ``k < t``, and on columns already
known. For a run of lengths ``t0 <= t < t1`` the solver writes a guess ``G`` (``L`` continuing its last increment;
for a column's first run, one made from neighbouring widths) into the column, evaluates the recurrence ``L'`` for
the whole run at once from the guessed column, and keeps the longest prefix where ``L' = G`` plus the first
mismatching entry: by induction on ``t``, if ``G = L`` below ``t`` then ``L'(t)`` is the true one, so every kept
entry is exact; the own candidates of fact 1 are therefore the breakpoints of the guessed column, read up to the
end of the run. After a mismatch the re-evaluated tail is the
next guess for the same run (a Picard iteration, again verified before anything is kept). Dense runs double while
guesses hold and halve when they fail.

**4. F follows N until spent wins (proof by induction).** The split terms of ``F`` are those of ``N`` with ``F``'s
own column in place of ``N``'s. So if ``F(k, q) = N(k, q)`` for all ``k < t`` and the spent value at ``t`` is not
below ``N(t, q)``, then ``F(t, q) = N(t, q)`` with ``N``'s decision (a tie goes to ``N``'s option, spent being
last in the tie order). Hence ``F(., q)`` is copied from ``N(., q)`` below the first ``t*`` where spent is strictly
better, ``F(t*, q)`` is the spent value, and only ``t > t*`` is solved (in practice a small part of the table).

**5. Equal inputs, equal columns.** A column is a function of its own width's floor region (``full``) and of the
columns it reads (``F(., q - s)``, ``N(., q - i)``, ``N(., q - i + s)`` and, for ``F``, ``N(., q)``). When a width
reads the very columns another width read, with the same floor region, its column is that width's; and a column
equal to its left neighbour is stored as that neighbour, so equality propagates to the columns that read it. At
fine quanta (``s > 1``, or large budgets) most widths are settled this way without any evaluation.

**6. Sparse verification (proof).** Under a guess that is linear between its knots, every candidate of a run is a
shifted column plus a linear function of ``t``, clipped at a fixed length: linear between *events* (the knots of
the columns it reads, shifted, its clipping point, and the knots of the guess). For ``t >= 3`` "store nothing" is
never the minimum when a split or spent option exists (``y = 1`` costs at most ``2 + t (t - 1) / 2`` with hidden
states, ``1 + t (t - 1) / 2`` with internal or spent ones), so between two events the recurrence ``L'`` is a
minimum of linear functions: concave. If ``L' = G`` at an event ``e``, at ``e + 1`` and at the next event ``e'``,
then ``L' - G`` is concave, zero at ``e`` and ``e + 1`` hence non-increasing after, and zero at ``e'``: zero on the
whole gap. So evaluating ``L'`` at the events and the lengths right after them verifies a run of any length. At
the first evaluated mismatch after a gap, every candidate is linear on the gap and non-increasing relative to
``G``, and the first length where one drops below ``G`` is solved for exactly. The evaluation there (interpolated)
is the next guess. Runs whose events are too many are verified densely, as in fact 3.

**7. Caps (proof).** Every cost is at least its length (``C(t) >= t``) and grows by at least one per step
(``C(t + 1) >= C(t) + 1``: dropping step ``t + 1`` from a schedule drops at least its own forward). Cap every cell
at ``K + t`` for a ``K >= 0``. If ``C(t, q) < K + t``, each sub-problem of an optimal split is also below its cap
(for a hidden split, ``C(y) = C(t) - y - C(t - y) < K + t - y - (t - y) <= K + y``, and alike for the others), so
its capped value is exact; and a split that reads a capped cell evaluates to at least ``K + t`` (the capped part
is at least ``K`` plus its length, the rest at least its length). So the capped recurrence gives
``min(C(t, q), K + t)`` everywhere, with the exact decision wherever ``C < K + t``, and a column can stop at the
first cell that reaches its cap (``C(t) - t`` never decreases). Every sub-problem of an optimal policy for a query
``(T, Q)`` with ``C(T, Q) <= B`` is below the cap ``K = B + 1 - T``. ``B`` is an upper bound on the cost
(``_solver._cost_bound``: binomial checkpointing, Chen's segments, a chain of checkpoints), or ``2T`` first for the
table that queries share; a capped table answers only queries whose cell is below its cap.

**8. Two forwards per extra step (proof by induction on ``q``, then ``t``).** With internal states and ``M = (q -
s) // i``, ``N(t + 1, q) >= N(t, q) + 2`` for ``t >= M + 1`` (the floor's end) and ``F(t + 1, q) >= F(t, q) + 2``
for ``t >= M + 2``. Take the best option at ``t + 1`` and compare it with an option at ``t``. Store nothing: the
values differ by ``t + 1``. A split ``y`` whose right part is long enough for the claim at its narrower width:
the same split at ``t``, which differs only there, by at least 2. Otherwise, for ``y >= 2``: the split ``y - 1``
at ``t`` with the same right part, ``1 + L(y - o) - L(y - 1 - o) >= 2`` below (increments are at least 1, fact 7).
For ``y = 1``: an internal split leaves a right part of ``t`` steps on ``M - 1`` slots, which is long enough; a
hidden one costs ``2 + F(t, q - s)``, and a short right part means ``t = M + 1`` (``N(t, q) = t <= F(t, q -
s)``) or ``t = M + 2`` with ``(q - 2s) // i = M``, where ``N(t, q) = M + 3`` (the two-forward policy of
``_solver._two_forward_length``) and ``F(t, q - s) >= M + 3`` (its lower bound: ``2t - 1 - (q - s) // i``); for
``F``, ``F(t, q) <= F(t, q - s)`` (more memory never costs more). Spent: ``1 + N(t, q - i + s)`` against ``1 +
N(t - 1, q - i + s)``, with ``t - 1`` past that width's floor.

**9. Caps for one query (proof).** Fact 7 caps every cell at ``K + t``. A table solved for a single query ``(T, Q)``
may cap lower. Write ``X = C(t, q) - t`` and ``E = K - 1 >= X(T, Q)``. In the tree of an optimal policy, a split's
excess is ``X(parent) = y + X(left) + X(right)`` (hidden), ``y - 1 + X(left) + X(right)`` (internal) and
``X(child)`` (spent). A node below a left child, whose length ``y`` or ``y - 1`` is at least the node's ``t``,
has ``X <= E - t``. A node reached by right children only has ``X <= E - (T - t) + k``, with ``k`` its internal
and spent ancestors, at most ``c(q) = (Q - q) // d`` of them (``d = i - s`` with hidden states, each costing that
much net, ``i`` without; no cap when ``i = s``). So every cell of the policy has ``X <= M(t, q) = max(-1, min(E,
max(E - t, E - T + t + c(q))))``; cap it at ``t + M(t, q) + 1``. These caps are consistent: a split of any cell
that reads a capped part costs at least the cell's own cap, because ``M(t - y, q - s) + y >= M(t, q)`` (hidden
right part), ``M(t - y, q - i) + y >= M(t, q) + 1`` (internal, ``c(q - i) >= c(q) + 1``), ``M(t - 1, q - i + s)
>= M(t, q)`` (spent, ``c(q - d) = c(q) + 1``), ``M(y, q) >= E - y`` (left parts), and the other part costs at
least its length. By induction on the cells, the capped recurrence then holds ``min(C(t, q), cap(t, q))``
everywhere, with the uncapped decision wherever it is below the cap (a split reading a capped cell never ties),
and a cell below its cap heads a policy of cells below theirs: the query is answered exactly whenever its own
cell is. A column can still stop at its first capped cell: the cap rises by at most 2 per step, and by fact 8
the column by at least 2 from where it is solved (``t0`` is past the floor, for ``F`` past it plus one).

Storage: a column is piecewise linear in ``t`` with few pieces (a handful on average, at most ``t``), and is kept as
its knots (:class:`Column`); decisions are not stored but recomputed for one cell on demand from the candidates of
fact 1 (:meth:`Columns.decide`), which gives exactly the decision a dense table would hold. Cost of a solve: for
the widths that facts 4-5 leave, the cells of dense runs and the events of sparse ones (up to where fact 7 stops
the column) times the pruned candidates (a few to a few dozen), plus a few dozen numpy calls per run.
"""

from __future__ import annotations

import numpy as np

_INF = 2**60  # three of these still add up without overflowing int64
_NOTHING, _HIDDEN, _INTERNAL, _SPENT = 0, 1, 2, 3  # decision codes, shared with memjax._solver
_FIRST_RUN = 256  # first dense run; 64 and 128 were measured 4-7% slower at t = 10^4
_MAX_RUN = 1 << 14  # of a dense run; sparse ones grow without bound
_MAX_CELLS = 1 << 22  # candidate values evaluated at once by a dense run (32 MiB)
_NARROW = 1 << 30  # below this, a sum of two values fits in int32


class Column:
    """An integer function ``C(0), ..., C(length)`` kept as the knots where its increment changes.

    ``C`` is linear between consecutive knots (``knots[0] = 0``, ``knots[-1] = length``), with increment
    ``slopes[j]`` on piece ``j`` (from ``knots[j]`` to ``knots[j + 1]``); ``convex`` holds the convex breakpoints
    ``{k : C(k + 1) - C(k) > C(k) - C(k - 1)}`` of fact 1, ascending. The envelopes of the increments ``c(k) =
    C(k) - C(k - 1)`` that fact 2 reads are kept per piece.
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


class _Term:
    """One split term ``y + L(y - offset) + R(t - y)`` of the column being solved, ``R`` a known column."""

    __slots__ = ("offset", "excess", "column", "rise", "step", "_narrow")

    def __init__(self, offset: int, column: Column, dense: np.ndarray):
        self.offset, self.column = offset, column
        self.excess = dense - np.arange(dense.shape[0])  # R(k) - k
        z = column.convex  # z in BP+(R): r(z + 1) > r(z)
        self.rise, self.step = column.increment(z + 1), column.increment(z)
        self._narrow = None

    def narrow(self) -> np.ndarray:
        """``excess`` as int32, for tables whose caps are below ``_NARROW`` (then so is every value)."""
        if self._narrow is None:
            self._narrow = np.minimum(self.excess, _NARROW).astype(np.int32)
        return self._narrow


def _candidates(prefix: Column, t0, t1, terms, length):
    """The pruned candidates (facts 1-2) of every term for the lengths ``t0 <= t < t1``, given the column ``prefix``
    up to ``t1 - 1`` (exact below ``t0``, guessed after): ``[(own_splits, right_breakpoints)]``, one pair per term.

    Own candidates are the convex breakpoints of the whole guessed prefix: under the induction of fact 3 (the guess
    is exact below ``t``) these are the breakpoints of ``L`` that fact 1 needs at ``t``.
    """
    own_all = prefix.convex
    if own_all.size:  # l(b) and l(b + 1) at each convex breakpoint b, for fact 2
        before, after = prefix.increment(own_all) + 2, prefix.increment(own_all + 1) + 1
    chosen = []
    for term in terms:
        offset, right = term.offset, term.column
        own = own_all
        if own.size:  # fact 2 for y = b + offset: p = t - y in [t0 - y, t1 - 1 - y]
            y = own + offset
            first = right.first_reaching(before) - 1
            bound = right.last_at_most(after)
            own = own[np.maximum(first, t0 - y) <= np.minimum(bound, t1 - 1 - y)]
        if own.size == 0:
            own = np.ones(1, np.int64)  # the end y = 1: changes nothing
        z = right.convex
        if z.size:  # fact 2 for y = t - z: p = t - z - offset in [t0 - z - offset, t1 - 1 - z - offset]
            low = np.maximum(t0 - z - offset, 1)  # <= t0 - 1
            high = np.maximum(t1 - z - offset, 1)  # p + 1 at the end of the run, <= t1 - 1
            keep = (prefix.min_from(low) <= term.rise - 2) & (prefix.max_up_to(high) >= term.step - 1) & (z + 2 <= t1)
            z = z[keep]
        chosen.append((own, np.concatenate([z, [1, length + 1]])))  # and the ends y = t - 1, (clipped) y = 1
    return chosen


def _width(chosen) -> int:
    """The candidates per length of :func:`_values`: the pruned ones of every term, the spent option, the cap."""
    return 2 + sum(own.shape[0] + right.shape[0] for own, right in chosen)


def _values(column, points, terms, chosen, spent, ceiling):
    """The value *minus the length* of every candidate (columns) at every length of ``points`` (rows, ascending),
    from the guessed column; the ceiling of fact 7 is one more candidate.

    Subtracting ``t`` leaves one gather and one addition per candidate and length: ``y + L(y - o) + R(t - y) - t``
    is ``L(y - o) + R~(t - y)`` with ``R~(k) = R(k) - k`` for an own breakpoint ``y``, and ``L(t - z - o) + R~(z)``
    for ``y = t - z``. Candidates outside ``1 <= y < t`` at some length are clipped into it there (a clipped
    candidate is an end, which is a candidate anyway). For consecutive lengths (dense runs) a candidate that is
    never clipped reads a contiguous slice, taken from a sliding window instead of gathered element by element.
    """
    lengths = points[:, None]
    first, last, rows = int(points[0]), int(points[-1]), points.shape[0]
    # int32 halves the memory traffic, which bounds this function; all values stay below the table's largest cap
    # (ceiling[-1]); copying the column read (up to the last length) must cost no more than the values made
    narrow = int(ceiling[-1]) < _NARROW and rows * _width(chosen) >= last
    if narrow:  # a guess above every cap is wrong where it stands, and nothing after it is kept: clip it
        column = np.minimum(column[: last + 1], _NARROW).astype(np.int32)
    consecutive = rows > 1 and last - first + 1 == rows
    window = np.lib.stride_tricks.sliding_window_view
    blocks = []  # each (candidates, lengths)
    for term, (own, right_candidates) in zip(terms, chosen):
        offset, excess = term.offset, (term.narrow() if narrow else term.excess)
        ys = own + offset
        inside = ys < first  # y < t at every length
        y = ys[inside]
        if y.size:
            if consecutive:
                blocks.append(window(excess, rows)[first - y] + column[y - offset][:, None])
            else:
                blocks.append((excess[lengths - y] + column[y - offset]).T)
        y = np.minimum(ys[~inside], lengths - 1)
        if y.size:
            blocks.append((excess[lengths - y] + column[y - offset]).T)
        inside = right_candidates < first  # 1 <= y = t - z at every length
        z = right_candidates[inside]
        if z.size:
            if consecutive:
                blocks.append(window(column, rows)[first - (z + offset)] + excess[z][:, None])
            else:
                blocks.append((column[lengths - (z + offset)] + excess[z]).T)
        z = right_candidates[~inside]
        if z.size:
            y = np.maximum(lengths - z, 1)
            blocks.append((column[y - offset] + excess[lengths - y]).T)
    kind = np.int32 if narrow else np.int64
    if spent is not None:
        blocks.append((spent[points] - points).astype(kind)[None, :])
    blocks.append((ceiling[points] - points).astype(kind)[None, :])
    return np.concatenate(blocks, axis=0).T


def _shifted(knots, shifts, low, high, limit):
    """Every ``knots[j] + shifts[k]`` in ``[low, high]`` (``knots`` ascending), without forming all pairs; ``None``
    if there are more than ``limit``."""
    if knots.shape[0] * shifts.shape[0] <= 4096:  # few pairs: all of them
        pairs = (knots[:, None] + shifts[None, :]).ravel()
        pairs = pairs[(pairs >= low) & (pairs <= high)]
        return None if pairs.shape[0] > limit else pairs
    first = np.searchsorted(knots, low - shifts)
    counts = np.searchsorted(knots, high - shifts, side="right") - first
    total = int(counts.sum())
    if total > limit:
        return None
    ends = np.cumsum(counts)
    index = np.arange(total) - np.repeat(ends - counts, counts) + np.repeat(first, counts)
    return knots[index] + np.repeat(shifts, counts)


def _events(prefix: Column, t0, t1, terms, chosen, fixed_knots):
    """Lengths in ``[t0, t1)`` where some candidate or the guess may change slope (fact 6) and the lengths right
    after them, or ``None`` when they are too many for the sparse evaluation to pay (over half the run)."""
    knots, high = prefix.knots, t1 - 1
    limit = (t1 - t0) // 2
    parts = [np.array([t0, high]), knots[knots >= t0]]
    if fixed_knots is not None:
        parts.append(fixed_knots)
    for term, (own, right_candidates) in zip(terms, chosen):
        ys = own + term.offset
        parts += [ys + 1, right_candidates + 1]
        for shifted in (
            _shifted(term.column.knots, np.append(ys, 1), t0, high, limit),
            _shifted(knots, right_candidates + term.offset, t0, high, limit),
        ):
            if shifted is None:
                return None
            limit -= shifted.shape[0]
            parts.append(shifted)
    events = np.concatenate(parts)
    events = events[(events >= t0) & (events <= high)] - t0
    if 2 * events.shape[0] > t1 - t0:
        return None
    marked = np.zeros(t1 - t0 + 1, bool)
    marked[events] = True
    marked[events + 1] = True
    points = np.flatnonzero(marked[:-1]) + t0
    return points if 2 * points.shape[0] <= t1 - t0 else None


def _solve_column(column, t0, terms, spent, fixed_knots, nothing, everything, ceiling, guess=None):
    """Fill ``column[t0:]`` (one table at one width) by guess and verify (facts 1-3, 6).

    ``spent`` is ``None`` or the spent option's value for every ``t`` (read for ``t >= t0 >= 2``), and
    ``fixed_knots`` the lengths where it or ``ceiling`` change slope. Candidates outside ``1 <= y < t`` are clipped
    into it: a clipped candidate is an end, which is a candidate anyway. Values are capped at ``ceiling`` (facts 7
    and 9): once a kept entry reaches it, the rest of the column is the ceiling. ``guess``, if given, is a column
    whose increments from ``t0`` on are the first guess (made from neighbouring widths), instead of the last
    increment continued.

    Returns the :class:`Column` of the filled column when the last verified run made it (``None`` otherwise).
    """
    length = column.shape[0] - 1
    if t0 > length:
        return None
    if not terms and spent is None:
        column[t0:] = np.minimum(nothing[t0:], ceiling[t0:])
        return None
    if t0 == 2:  # fact 6 leaves "store nothing" out, which can only tie at t = 2: this one cell directly
        point = everything[2:3]
        chosen = _candidates(Column(column[:3]), 2, 3, terms, length)
        column[2] = min(nothing[2], 2 + _values(column, point, terms, chosen, spent, ceiling).min())
        t0 = 3
    run, dense_run = length, _FIRST_RUN  # sparse runs cost their events, dense ones their length
    t1 = t0  # column[t0:t1] holds a guess (the last evaluation of a run that was not all confirmed)
    if guess is not None and t0 <= length:
        column[t0:] = np.minimum(guess[t0:] - guess[t0 - 1] + column[t0 - 1], ceiling[t0:])
        t1 = length + 1
    sparse = True  # try a sparse run, unless the last dense one failed (knots are dense here)
    prefix, confirmed = None, False
    while t0 <= length:
        if t1 <= t0:  # a fresh run: continue the last increment
            t1 = min(length + 1, t0 + run)
            step = column[t0 - 1] - column[t0 - 2]
            column[t0:t1] = column[t0 - 1] + step * (everything[t0:t1] - (t0 - 1))
        if not sparse:
            t1 = min(t1, t0 + dense_run)
        prefix = Column(column[:t1])
        chosen = _candidates(prefix, t0, t1, terms, length)
        points = _events(prefix, t0, t1, terms, chosen, fixed_knots) if sparse and t1 - t0 >= 8 else None
        if points is None:  # dense: every length of a shorter run, of at most _MAX_CELLS candidate values
            most = min(dense_run, max(8, _MAX_CELLS // _width(chosen)))
            if t1 > t0 + most:
                t1 = t0 + most
                chosen = _candidates(Column(column[:t1]), t0, t1, terms, length)
            best = _values(column, everything[t0:t1], terms, chosen, spent, ceiling).min(axis=1) + everything[t0:t1]
            wrong = np.flatnonzero(best != column[t0:t1])
            confirmed = wrong.size == 0
            keep = t1 - t0 if confirmed else int(wrong[0]) + 1
            # Entries past the first mismatch were evaluated from a partly wrong guess: they are the next
            # guess for the same run (a Picard iteration), verified in turn before being kept.
            column[t0:t1] = best
            dense_run = min(_MAX_RUN, 2 * dense_run) if keep == t1 - t0 else max(_FIRST_RUN, dense_run // 2)
            run, sparse = 2 * dense_run, keep == t1 - t0
        else:  # sparse (fact 6): the events and the lengths right after them
            values = _values(column, points, terms, chosen, spent, ceiling)  # minus the length
            best = values.min(axis=1) + points
            wrong = np.flatnonzero(best != column[points])
            confirmed = wrong.size == 0
            if confirmed:
                keep = t1 - t0
            else:
                m = int(wrong[0])
                mismatch = int(points[m])
                if m > 0 and points[m - 1] < mismatch - 1:  # a gap: every candidate is linear on it
                    a = int(points[m - 1])
                    assert m >= 2 and points[m - 2] == a - 1
                    slope = values[m - 1] - values[m - 2] + 1
                    drop = column[a] - column[a - 1] - slope  # how fast each candidate nears the guess
                    ahead = values[m - 1] + a - column[a]
                    falling = drop > 0
                    first = a + 1 + ahead[falling] // drop[falling]
                    mismatch = int(first.min())
                    value = int((values[m - 1] + a + slope * (mismatch - a)).min())
                else:
                    value = int(best[m])
                keep = mismatch - t0 + 1
                # the next guess (Picard): the evaluation after the mismatch, linear between evaluated lengths
                later = points > mismatch
                nodes = np.concatenate([[mismatch], points[later]])
                column[mismatch:t1] = np.rint(
                    np.interp(everything[mismatch:t1], nodes, np.concatenate([[value], best[later]]))
                ).astype(np.int64)
                column[mismatch] = value
            if keep == t1 - t0:
                run = max(run, 8 * (t1 - t0))
        t0 += keep
        if column[t0 - 1] >= ceiling[t0 - 1]:  # capped from here on (facts 7 and 9)
            column[t0:] = ceiling[t0:]
            return None
    # the last run confirmed its whole guess up to the end (and changed nothing): its prefix is the column
    return prefix if confirmed and t1 == length + 1 else None


class Columns:
    """The solved tables ``N`` and ``F`` for all ``t <= length`` and ``q <= quanta``, as shared :class:`Column`\\ s.

    ``cost(t, q)`` and ``decide(t, q, freeable)`` are the table's cell and decision (fact 1, recomputed on demand);
    ``dense()`` expands everything into arrays (for tests and small tables).
    """

    def __init__(self, length, quanta, s, i, hidden, internal, fixed, free, slack=_INF, path=None):
        self.length, self.quanta, self.s, self.i, self.slack, self.path = length, quanta, s, i, slack, path
        self.hidden, self.internal = hidden, internal
        self.fixed, self.free = fixed, free  # lists of Column | None indexed by q; free is None unless both
        self.shape = (length + 1, quanta + 1)

    def _full_length(self, q: int) -> int:
        return (q - self.s) // self.i + 1 if self.internal else q // self.s

    def cost(self, t: int, q: int) -> int:
        """``N(t, q)``; ``_INF`` below ``s`` quanta."""
        column = self.fixed[min(q, self.quanta)]
        return _INF if column is None else int(column.at(t))

    def exact(self, t: int, q: int) -> bool:
        """Whether ``N(t, q)`` is below its cap (facts 7 and 9): then it and the decisions of its policy, all the
        way down, are those of the uncapped table."""
        q = min(q, self.quanta)
        return self.cost(t, q) <= t + int(_excess(t, q, self.slack, self.path))

    def decide(self, t: int, q: int, freeable: bool) -> tuple[int, int]:
        """The decision ``(option, split)`` of cell ``(t, q)`` (``t >= 2``) of ``F`` if ``freeable`` else ``N``."""
        option, split = self.decisions(np.array([t]), q, freeable)
        return int(option[0]), int(split[0])

    def decisions(self, ts: np.ndarray, q: int, freeable: bool) -> tuple[np.ndarray, np.ndarray]:
        """The decisions ``(option, split)`` of cells ``(t, q)`` for the lengths ``ts`` (all ``>= 2``): the smallest
        key ``(value, option, split)`` over the candidates of fact 1, as in a dense table."""
        s, i = self.s, self.i
        q = min(q, self.quanta)
        ts = np.asarray(ts, np.int64)
        if q < s:
            return np.full(ts.shape, _NOTHING), np.zeros(ts.shape, np.int64)
        both = self.free is not None
        own = (self.free if freeable and both else self.fixed)[q]
        scale = self.length + 2
        best = (ts * (ts + 1) // 2) * 4 * scale
        terms = []
        if self.hidden and q - s >= s:
            terms.append((_HIDDEN, 0, (self.free if both else self.fixed)[q - s]))
        if self.internal and q - i >= s:
            terms.append((_INTERNAL, 1, self.fixed[q - i]))
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
            best = np.minimum(best, ((1 + self.fixed[q - i + s].at(ts - 1)) * 4 + _SPENT) * scale + 1)
        option, split = np.divmod(best % (4 * scale), scale)
        floor = ts <= self._full_length(q)  # every state stored: the floor, split 1
        option[floor] = _INTERNAL if self.internal else _HIDDEN
        split[floor] = 1
        return option, split

    def dense(self):
        """``((cost, code, split), free)`` as dense ``(length + 1, quanta + 1)`` arrays, ``free`` ``None`` unless ``F``
        is a table of its own (the layout of ``tests/test_solver_fast.py``'s reference)."""
        tables = []
        ts = np.arange(2, self.length + 1)
        for freeable in (False, True) if self.free is not None else (False,):
            cost = np.full(self.shape, _INF, np.int64)
            code = np.zeros(self.shape, np.int8)
            split = np.zeros(self.shape, np.int32)
            for q in range(self.s, self.quanta + 1):
                cost[:, q] = (self.free if freeable else self.fixed)[q].dense()
                if ts.size:
                    code[2:, q], split[2:, q] = self.decisions(ts, q, freeable)
            tables.append((cost, code, split))
        return tables[0], (tables[1] if len(tables) > 1 else None)


def _free_guess(fixed: np.ndarray, spent: np.ndarray) -> np.ndarray:
    """The first guess of ``F(., q)`` from ``N(., q)`` and the spent option: ``min(N(t), 2 N(t - 1) - N(t - 2),
    spent(t))``, i.e. ``N`` with its one-length bumps flattened and each rise of its increment one length late.
    A heuristic (guesses are verified): at t = 10^4, alpha = 7.5 and 200 to 1500 quanta its increments differ from
    ``F``'s at one length at most, the left neighbour ``F(., q - 1)``'s at about one per knot (measured)."""
    guess = np.minimum(fixed, spent)
    np.minimum(guess[2:], 2 * fixed[1:-1] - fixed[:-2], out=guess[2:])
    return guess


def _path(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool, slack: int):
    """The parameters ``(T, Q, d)`` of fact 9's caps for the query ``(length, quanta)``, or ``None`` where they do
    not apply (no cap, no internal states, or spent checkpoints that cost no quanta)."""
    if slack >= _INF // 4 or not internal or (hidden and i == s):
        return None
    return length, quanta, (i - s) if hidden and i > s else i


def _excess(t, q: int, slack: int, path) -> np.ndarray:
    """The largest ``C(t, q) - t`` a cell may have and still be exact: ``slack - 1`` (fact 7), or fact 9's
    ``max(-1, min(E, max(E - t, E - T + t + (Q - q) // d)))`` with ``E = slack - 1``; the cap is one more."""
    if path is None:
        return np.full(np.shape(t), slack - 1, np.int64)
    most = slack - 1
    length, quanta, d = path
    t = np.asarray(t, np.int64)
    return np.maximum(np.minimum(most, np.maximum(most - t, most - length + t + (quanta - q) // d)), -1)


def solve_columns(
    length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool, slack: int = _INF, query: bool = False
) -> Columns:
    """Solve ``N`` (and ``F`` when both options are enabled and ``i >= s``) for ``t <= length``, ``q <= quanta``.

    Every cell is capped at ``slack + t`` (fact 7): exact wherever it is below, and the cap elsewhere. A query of
    length ``T`` whose cost is at most ``B`` is answered exactly, decisions included, with ``slack = B + 1 - T``.
    With ``query``, cells are capped for the query ``(length, quanta)`` alone (fact 9): lower caps, fewer cells,
    and :meth:`Columns.exact` tells which cells (that query's among them) are exact.
    """
    if hidden and internal and i < s:
        hidden = False  # MSM equals ISM here (module doc)
    path = _path(length, quanta, s, i, hidden, internal, slack) if query else None
    both = hidden and internal
    n = length + 1
    fixed: list = [None] * (quanta + 1)
    free: list | None = [None] * (quanta + 1) if both else None
    freeable = free if both else fixed  # the table of a freeable start: F, or N itself without internal states
    everything = np.arange(n, dtype=np.int64)
    nothing = everything * (everything + 1) // 2
    floor = everything if internal else np.maximum(2 * everything - 1, 0)
    ceilings: dict[int, tuple] = {}  # (quanta - q) // d -> (ceiling, its knots): fact 9's caps change every d

    def ceiling_of(q: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The caps ``C(t) <= ceiling[t]`` of width ``q`` and the lengths where they change slope."""
        key = 0 if path is None else (quanta - q) // path[2]
        got = ceilings.get(key)
        if got is None:
            ceiling = everything + 1 + _excess(everything, q, slack, path)
            got = ceilings[key] = (ceiling, None if path is None else Column(ceiling).knots)
        return got

    dense: dict[int, np.ndarray] = {}  # id(column) -> its values, for the columns still to be read
    # fact 5: (table, floor region, ids of the columns read) -> a column that never reached its cap, which any width
    # reading the same columns may share if it stays below that width's cap too; with the id of the ceiling
    # added -> a column that did
    seen: dict[tuple, Column] = {}

    def below(column: Column, ceiling: np.ndarray) -> bool:
        return path is None or bool((values_of(column) < ceiling).all())

    def lookup(key: tuple, ceiling: np.ndarray) -> Column | None:
        column = seen.get(key)
        if column is not None and below(column, ceiling):
            return column
        return None if path is None else seen.get(key + (id(ceiling),))

    def remember(key: tuple, ceiling: np.ndarray, column: Column) -> None:
        seen[key if below(column, ceiling) else key + (id(ceiling),)] = column

    def values_of(column: Column) -> np.ndarray:
        values = dense.get(id(column))
        if values is None:
            values = dense[id(column)] = column.dense()
        return values

    contents: dict[bytes, Column] = {}  # fact 5 by content: equal columns are one object, whatever their width

    def stored(column: Column) -> Column:
        return contents.setdefault(column.knots.tobytes() + column.values.tobytes(), column)

    terms: dict[tuple[int, int], _Term] = {}  # (offset, id(column)) -> its term, while the column is live

    def terms_of(right_hidden: Column | None, right_internal: Column | None) -> list[_Term]:
        chosen = []
        for offset, right in ((0, right_hidden), (1, right_internal)):
            if right is not None:
                term = terms.get((offset, id(right)))
                if term is None:
                    term = terms[offset, id(right)] = _Term(offset, right, values_of(right))
                chosen.append(term)
        return chosen

    def predicted(q: int, top: int) -> np.ndarray | None:
        """The first guess of ``N(., q)``: its left neighbour, less the step that width ``q - s`` took from its
        own left neighbour, delayed by ``top`` lengths. A heuristic (any guess is verified, so only the speed
        depends on it). Observed, not proven: with both options and from about 100 hidden states on,
        ``N(t, q) = N(t - top, q - s) + 2 top`` for all but the shortest lengths (a hidden checkpoint at ``top``,
        every internal state stored before it), so these steps repeat; at alpha = 7.5 and t = 10^4 they differ
        in 0 to 25 of 10^4 lengths, against thousands for the left neighbour alone."""
        left = fixed[q - 1]
        if left is None:
            return None
        guess = values_of(left)
        if both and q - 1 - s >= s and fixed[q - 1 - s] is not None and 0 < top < n:
            step = values_of(fixed[q - 1 - s]) - values_of(fixed[q - s])
            guess = guess.copy()
            guess[top:] -= step[: n - top]
        return guess

    for q in range(s, quanta + 1):
        full_length = (q - s) // i + 1 if internal else q // s  # the longest t with every state stored
        top = min(full_length, length)
        t0 = max(2, top + 1)
        right_hidden = freeable[q - s] if hidden and q - s >= s else None
        right_internal = fixed[q - i] if internal and q - i >= s else None
        ceiling, ceiling_knots = ceiling_of(q)
        key = ("N", top, id(right_hidden), id(right_internal))
        column = lookup(key, ceiling)
        if column is None:
            values = np.zeros(n, np.int64)
            values[: min(length, 1) + 1] = everything[: min(length, 1) + 1]
            values[2 : top + 1] = floor[2 : top + 1]
            np.minimum(values, ceiling, out=values)
            made = _solve_column(
                values,
                t0,
                terms_of(right_hidden, right_internal),
                None,
                ceiling_knots,
                nothing,
                everything,
                ceiling,
                predicted(q, top),
            )
            column = stored(Column(values) if made is None else made)
            dense[id(column)] = values
            remember(key, ceiling, column)
        fixed[q] = column
        if both:
            spent_from = fixed[q - i + s] if q >= i else None
            key = ("F", top, id(right_hidden), id(right_internal), id(column), id(spent_from))
            free_column = lookup(key, ceiling)
            if free_column is None:
                free_column = column
                if spent_from is not None and t0 <= length:
                    values = values_of(column)
                    spent = np.full(n, _INF, np.int64)
                    spent[2:] = 1 + values_of(spent_from)[1:length]
                    wins = np.flatnonzero(spent[t0:] < values[t0:])
                    if wins.size:
                        first = t0 + int(wins[0])
                        free_values = values.copy()
                        free_values[first] = min(spent[first], ceiling[first])
                        fixed_knots = spent_from.knots + 1
                        if ceiling_knots is not None:
                            fixed_knots = np.concatenate([fixed_knots, ceiling_knots])
                        made = _solve_column(
                            free_values,
                            first + 1,
                            terms_of(right_hidden, right_internal),
                            spent,
                            fixed_knots,
                            nothing,
                            everything,
                            ceiling,
                            _free_guess(values, spent),
                        )
                        free_column = stored(Column(free_values) if made is None else made)
                        dense[id(free_column)] = free_values
                remember(key, ceiling, free_column)
            free[q] = free_column
        # Keep the values (and terms) of the columns that later widths still read, q + 1 - i - s and above: at most
        # 2 (i + s + 1) of them, so sweeping once the dict holds twice that bounds what is kept.
        if len(dense) > 4 * (i + s + 1):
            live = {
                id(c)
                for table in ((fixed, free) if both else (fixed,))
                for c in table[max(s, q + 1 - i - s) : q + 1]
                if c is not None
            }
            for key_id in [key_id for key_id in dense if key_id not in live]:
                del dense[key_id]
            for key in [key for key in terms if key[1] not in live]:
                del terms[key]
    return Columns(length, quanta, s, i, hidden, internal, fixed, free, slack, path)
