"""The column-wise exact solver of the N / F recurrences (BPTT-MSM, HSM and ISM; numpy only).

One algorithm, kept whole: :class:`ColumnSolver` fills the tables ``N`` and ``F`` of ``docs/solver.md`` width by
width, in increasing ``q``, and in a width ``N`` before ``F`` (``F`` reads ``N(., q - i + s)``, the ``N`` column
itself when ``i = s``; ``N`` never reads ``F``'s own column). Each column is filled by guess and verify
(:meth:`ColumnSolver._fill_column`): a guess for a run of lengths, the recurrence evaluated on it over a few
candidate splits (:func:`_candidates`, :func:`_values`), at every length of the run or only at its events
(:func:`_events`), and the longest verified prefix kept. Every step is exact; the proofs are the numbered facts of
``docs/solver.md``:

* fact 8: a split term's minimum lies at an end or at a convex breakpoint of one of the two columns it reads;
* fact 9: most of those breakpoints can be ruled out from the increments of the columns alone;
* fact 10: a guessed run keeps exactly its verified prefix (induction on the length);
* fact 11: ``F(., q)`` is ``N(., q)`` up to the first length where the spent option wins;
* fact 12: widths that read the same columns (with the same floor) have the same column;
* fact 13: between events the recurrence is concave, so checking it at the events verifies a whole run;
* facts 14 and 15: cells capped above a known bound on the cost stay exact below the cap, and a column may stop
  at its first capped cell.

Notation (``docs/conventions.md``): ``t`` is a length (number of steps), ``q`` a width (a budget in quanta),
``s`` and ``i`` the quanta of a hidden and of an internal state. A split term of the column ``L`` being solved is
``y + L(y - offset) + R(t - y)``, ``R`` a column already solved and ``offset`` 0 for a hidden split, 1 for an
internal one. A run is the lengths ``t0 <= t < t1``.
"""

from __future__ import annotations

import numpy as np

from memjax._columns import _INF, Column, Columns, _excess, _query_caps, full_length

__all__ = ["ColumnSolver"]

# The first dense run is long enough that numpy's per-call overhead stays small, short enough that a wrong guess
# wastes little; dense runs then double while guesses hold and halve when they fail.
_FIRST_RUN = 256
_MAX_RUN = 1 << 14  # of a dense run; sparse ones grow without bound
_MAX_CELLS = 1 << 22  # candidate values evaluated at once by a dense run (32 MiB)
_NARROW = 1 << 30  # below this, a sum of two values fits in int32


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
    """The pruned candidates (facts 8 and 9) of every term for the lengths ``t0 <= t < t1``, given the column
    ``prefix`` up to ``t1 - 1`` (exact below ``t0``, guessed after): ``[(own_splits, right_breakpoints)]``, one
    pair per term.

    Own candidates are the convex breakpoints of the whole guessed prefix: under the induction of fact 10 (the
    guess is exact below ``t``) these are the breakpoints of ``L`` that fact 8 needs at ``t``.
    """
    own_all = prefix.convex
    if own_all.size:  # l(b) and l(b + 1) at each convex breakpoint b, for fact 9
        before, after = prefix.increment(own_all) + 2, prefix.increment(own_all + 1) + 1
    chosen = []
    for term in terms:
        offset, right = term.offset, term.column
        own = own_all
        if own.size:  # fact 9 for y = b + offset: p = t - y in [t0 - y, t1 - 1 - y]
            y = own + offset
            first = right.first_reaching(before) - 1
            bound = right.last_at_most(after)
            own = own[np.maximum(first, t0 - y) <= np.minimum(bound, t1 - 1 - y)]
        if own.size == 0:
            own = np.ones(1, np.int64)  # the end y = 1: changes nothing
        z = right.convex
        if z.size:  # fact 9 for y = t - z: p = t - z - offset in [t0 - z - offset, t1 - 1 - z - offset]
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
    from the guessed column; the ceiling of fact 14 is one more candidate.

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


def _events(prefix: Column, t0, t1, terms, chosen, spent_and_cap_knots):
    """Lengths in ``[t0, t1)`` where some candidate or the guess may change slope (fact 13) and the lengths right
    after them, or ``None`` when they are too many for the sparse evaluation to pay (over half the run)."""
    knots, high = prefix.knots, t1 - 1
    limit = (t1 - t0) // 2
    parts = [np.array([t0, high]), knots[knots >= t0]]
    if spent_and_cap_knots is not None:
        parts.append(spent_and_cap_knots)
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


def _freeable_guess(fixed_start: np.ndarray, spent: np.ndarray) -> np.ndarray:
    """The first guess of ``F(., q)`` from ``N(., q)`` and the spent option: ``min(N(t), 2 N(t - 1) - N(t - 2),
    spent(t))``, i.e. ``N`` with its one-length bumps flattened and each rise of its increment one length late.

    A heuristic (guesses are verified, so only the speed depends on it): the increments of ``F`` tend to follow
    those of ``N`` at the same width, one length late, more closely than those of ``F`` at the width before."""
    guess = np.minimum(fixed_start, spent)
    np.minimum(guess[2:], 2 * fixed_start[1:-1] - fixed_start[:-2], out=guess[2:])
    return guess


class ColumnSolver:
    """Solves ``N`` (and ``F`` when both options are on) for ``t <= length`` and ``q <= quanta``, width by width.

    Attributes:
      length, quanta, s, i, hidden, internal, cap_slack, query_caps: as in :class:`~memjax._columns.Columns`.
      fixed_start, freeable_start: the columns ``N(., q)`` and ``F(., q)`` solved so far, by width ``q``
        (``freeable_start`` is ``None`` unless both options are on).
      lengths: ``0, 1, ..., length``; store_nothing: the cost ``t (t + 1) / 2`` of storing nothing; floor: the
        cost with every state stored (fact 1).

    The rest is shared between widths: the caps (``_ceilings``), the dense values of the columns later widths still
    read (``_values``) and their split terms (``_terms``), and the columns already made, by their inputs
    (``_by_inputs``) and by their content (``_by_content``), for fact 12.
    """

    def __init__(
        self,
        length: int,
        quanta: int,
        s: int,
        i: int,
        hidden: bool,
        internal: bool,
        cap_slack: int = _INF,
        query: bool = False,
    ):
        if hidden and internal and i < s:
            hidden = False  # fact 2: MSM equals ISM
        self.length, self.quanta, self.s, self.i = length, quanta, s, i
        self.hidden, self.internal, self.cap_slack = hidden, internal, cap_slack
        self.query_caps = _query_caps(length, quanta, s, i, hidden, internal, cap_slack) if query else None
        self.both = hidden and internal
        self.fixed_start: list[Column | None] = [None] * (quanta + 1)
        self.freeable_start: list[Column | None] | None = [None] * (quanta + 1) if self.both else None
        # the right part of a hidden split starts from a freeable checkpoint: F, or N itself without internal states
        self._after_checkpoint = self.freeable_start if self.both else self.fixed_start
        self.lengths = np.arange(length + 1, dtype=np.int64)
        self.store_nothing = self.lengths * (self.lengths + 1) // 2
        self.floor = self.lengths if internal else np.maximum(2 * self.lengths - 1, 0)
        self._ceilings: dict[int, tuple] = {}  # (quanta - q) // d -> (ceiling, its knots): fact 15's caps, by d
        self._values: dict[int, np.ndarray] = {}  # id(column) -> its values, for the columns still to be read
        # (table, floor end, ids of the columns read) -> a column that never reached its cap, which any width reading
        # the same columns may share if it stays below that width's cap too; with the id of the ceiling added -> a
        # column that did
        self._by_inputs: dict[tuple, Column] = {}
        self._by_content: dict[bytes, Column] = {}  # equal columns are one object, whatever their width
        self._terms: dict[tuple[int, int], _Term] = {}  # (offset, id(column)) -> its term, while the column is read

    def solve(self) -> Columns:
        for q in range(self.s, self.quanta + 1):
            self._solve_width(q)
        return Columns(
            self.length,
            self.quanta,
            self.s,
            self.i,
            self.hidden,
            self.internal,
            self.fixed_start,
            self.freeable_start,
            self.cap_slack,
            self.query_caps,
        )

    def _solve_width(self, q: int) -> None:
        """Solve ``N(., q)`` and, with both options, ``F(., q)``; then forget what no later width reads."""
        s, i = self.s, self.i
        floor_end = min(full_length(q, s, i, self.internal), self.length)  # every state stored up to there
        right_hidden = self._after_checkpoint[q - s] if self.hidden and q - s >= s else None
        right_internal = self.fixed_start[q - i] if self.internal and q - i >= s else None
        ceiling, ceiling_knots = self._ceiling(q)
        column = self._fixed_column(q, floor_end, right_hidden, right_internal, ceiling, ceiling_knots)
        self.fixed_start[q] = column
        if self.both:
            self.freeable_start[q] = self._freeable_column(
                q, floor_end, right_hidden, right_internal, column, ceiling, ceiling_knots
            )
        self._forget_unread(q)

    def _fixed_column(self, q, floor_end, right_hidden, right_internal, ceiling, ceiling_knots) -> Column:
        """``N(., q)``: the floor up to ``floor_end`` (fact 1), then filled by :meth:`_fill_column`."""
        key = ("N", floor_end, id(right_hidden), id(right_internal))
        column = self._lookup(key, ceiling)
        if column is not None:
            return column
        length = self.length
        values = np.zeros(length + 1, np.int64)
        values[: min(length, 1) + 1] = self.lengths[: min(length, 1) + 1]
        values[2 : floor_end + 1] = self.floor[2 : floor_end + 1]
        np.minimum(values, ceiling, out=values)
        made = self._fill_column(
            values,
            max(2, floor_end + 1),
            self._terms_of(right_hidden, right_internal),
            None,
            ceiling_knots,
            ceiling,
            self._predicted(q, floor_end),
        )
        column = self._stored(Column(values) if made is None else made)
        self._values[id(column)] = values
        self._remember(key, ceiling, column)
        return column

    def _freeable_column(self, q, floor_end, right_hidden, right_internal, fixed, ceiling, ceiling_knots) -> Column:
        """``F(., q)``: ``N(., q)`` up to the first length where the spent option wins (fact 11), then filled."""
        s, i, length = self.s, self.i, self.length
        spent_from = self.fixed_start[q - i + s] if q >= i else None
        key = ("F", floor_end, id(right_hidden), id(right_internal), id(fixed), id(spent_from))
        column = self._lookup(key, ceiling)
        if column is not None:
            return column
        column = fixed
        t0 = max(2, floor_end + 1)
        if spent_from is not None and t0 <= length:
            fixed_values = self._values_of(fixed)
            spent = np.full(length + 1, _INF, np.int64)
            spent[2:] = 1 + self._values_of(spent_from)[1:length]
            wins = np.flatnonzero(spent[t0:] < fixed_values[t0:])
            if wins.size:
                first = t0 + int(wins[0])
                values = fixed_values.copy()
                values[first] = min(spent[first], ceiling[first])
                spent_and_cap_knots = spent_from.knots + 1
                if ceiling_knots is not None:
                    spent_and_cap_knots = np.concatenate([spent_and_cap_knots, ceiling_knots])
                made = self._fill_column(
                    values,
                    first + 1,
                    self._terms_of(right_hidden, right_internal),
                    spent,
                    spent_and_cap_knots,
                    ceiling,
                    _freeable_guess(fixed_values, spent),
                )
                column = self._stored(Column(values) if made is None else made)
                self._values[id(column)] = values
        self._remember(key, ceiling, column)
        return column

    def _fill_column(self, column, t0, terms, spent, spent_and_cap_knots, ceiling, guess=None) -> Column | None:
        """Fill ``column[t0:]`` (one table at one width) by guess and verify (facts 8-10 and 13).

        ``spent`` is ``None`` or the spent option's value for every ``t`` (read for ``t >= t0 >= 2``), and
        ``spent_and_cap_knots`` the lengths where it or ``ceiling`` change slope. Values are capped at ``ceiling``
        (facts 14 and 15): once a kept entry reaches it, the rest of the column is the ceiling. ``guess``, if given,
        is a column whose increments from ``t0`` on are the first guess (made from neighbouring widths), instead of
        the last increment continued.

        Returns the :class:`Column` of the filled column when the last verified run made it (``None`` otherwise).
        """
        lengths, store_nothing = self.lengths, self.store_nothing
        length = column.shape[0] - 1
        if t0 > length:
            return None
        if not terms and spent is None:
            column[t0:] = np.minimum(store_nothing[t0:], ceiling[t0:])
            return None
        if t0 == 2:  # fact 13 leaves "store nothing" out, which can only tie at t = 2: this one cell directly
            point = lengths[2:3]
            chosen = _candidates(Column(column[:3]), 2, 3, terms, length)
            column[2] = min(store_nothing[2], 2 + _values(column, point, terms, chosen, spent, ceiling).min())
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
                column[t0:t1] = column[t0 - 1] + step * (lengths[t0:t1] - (t0 - 1))
            if not sparse:
                t1 = min(t1, t0 + dense_run)
            prefix = Column(column[:t1])
            chosen = _candidates(prefix, t0, t1, terms, length)
            points = _events(prefix, t0, t1, terms, chosen, spent_and_cap_knots) if sparse and t1 - t0 >= 8 else None
            if points is None:  # dense: every length of a shorter run, of at most _MAX_CELLS candidate values
                most = min(dense_run, max(8, _MAX_CELLS // _width(chosen)))
                if t1 > t0 + most:
                    t1 = t0 + most
                    chosen = _candidates(Column(column[:t1]), t0, t1, terms, length)
                best = _values(column, lengths[t0:t1], terms, chosen, spent, ceiling).min(axis=1) + lengths[t0:t1]
                wrong = np.flatnonzero(best != column[t0:t1])
                confirmed = wrong.size == 0
                kept = t1 - t0 if confirmed else int(wrong[0]) + 1
                # Entries past the first mismatch were evaluated from a partly wrong guess: they are the next
                # guess for the same run (a Picard iteration), verified in turn before being kept.
                column[t0:t1] = best
                dense_run = min(_MAX_RUN, 2 * dense_run) if kept == t1 - t0 else max(_FIRST_RUN, dense_run // 2)
                run, sparse = 2 * dense_run, kept == t1 - t0
            else:  # sparse (fact 13): the events and the lengths right after them
                values = _values(column, points, terms, chosen, spent, ceiling)  # minus the length
                best = values.min(axis=1) + points
                wrong = np.flatnonzero(best != column[points])
                confirmed = wrong.size == 0
                if confirmed:
                    kept = t1 - t0
                else:
                    first_wrong = int(wrong[0])
                    mismatch = int(points[first_wrong])
                    if first_wrong > 0 and points[first_wrong - 1] < mismatch - 1:  # a gap: candidates are linear on it
                        before_gap = int(points[first_wrong - 1])
                        assert first_wrong >= 2 and points[first_wrong - 2] == before_gap - 1
                        slope = values[first_wrong - 1] - values[first_wrong - 2] + 1
                        drop = column[before_gap] - column[before_gap - 1] - slope  # how fast each nears the guess
                        ahead = values[first_wrong - 1] + before_gap - column[before_gap]
                        falling = drop > 0
                        first = before_gap + 1 + ahead[falling] // drop[falling]
                        mismatch = int(first.min())
                        value = int((values[first_wrong - 1] + before_gap + slope * (mismatch - before_gap)).min())
                    else:
                        value = int(best[first_wrong])
                    kept = mismatch - t0 + 1
                    # the next guess (Picard): the evaluation after the mismatch, linear between evaluated lengths
                    later = points > mismatch
                    nodes = np.concatenate([[mismatch], points[later]])
                    column[mismatch:t1] = np.rint(
                        np.interp(lengths[mismatch:t1], nodes, np.concatenate([[value], best[later]]))
                    ).astype(np.int64)
                    column[mismatch] = value
                if kept == t1 - t0:
                    run = max(run, 8 * (t1 - t0))
            t0 += kept
            if column[t0 - 1] >= ceiling[t0 - 1]:  # capped from here on (facts 14 and 15)
                column[t0:] = ceiling[t0:]
                return None
        # the last run confirmed its whole guess up to the end (and changed nothing): its prefix is the column
        return prefix if confirmed and t1 == length + 1 else None

    def _ceiling(self, q: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The caps ``C(t) <= ceiling[t]`` of width ``q`` and the lengths where they change slope (``None`` for the
        caps of fact 14, linear in ``t``)."""
        key = 0 if self.query_caps is None else (self.quanta - q) // self.query_caps[2]
        got = self._ceilings.get(key)
        if got is None:
            ceiling = self.lengths + 1 + _excess(self.lengths, q, self.cap_slack, self.query_caps)
            got = self._ceilings[key] = (ceiling, None if self.query_caps is None else Column(ceiling).knots)
        return got

    def _predicted(self, q: int, floor_end: int) -> np.ndarray | None:
        """The first guess of ``N(., q)``: its left neighbour, less the step that width ``q - s`` took from its own
        left neighbour, delayed by ``floor_end`` lengths.

        A heuristic (any guess is verified, so only the speed depends on it), from an observation not proven: with
        both options and many hidden states, ``N(t, q) = N(t - floor_end, q - s) + 2 floor_end`` for all but the
        shortest lengths (a hidden checkpoint at ``floor_end``, every internal state stored before it), so the
        steps between neighbouring widths repeat, ``floor_end`` lengths later, ``s`` quanta wider."""
        s, n = self.s, self.length + 1
        left = self.fixed_start[q - 1]
        if left is None:
            return None
        guess = self._values_of(left)
        narrower_left = self.fixed_start[q - 1 - s] if q - 1 - s >= s else None  # left neighbour of q - s
        if self.both and narrower_left is not None and 0 < floor_end < n:
            step = self._values_of(narrower_left) - self._values_of(self.fixed_start[q - s])
            guess = guess.copy()
            guess[floor_end:] -= step[: n - floor_end]
        return guess

    def _values_of(self, column: Column) -> np.ndarray:
        values = self._values.get(id(column))
        if values is None:
            values = self._values[id(column)] = column.dense()
        return values

    def _terms_of(self, right_hidden: Column | None, right_internal: Column | None) -> list[_Term]:
        chosen = []
        for offset, right in ((0, right_hidden), (1, right_internal)):
            if right is not None:
                term = self._terms.get((offset, id(right)))
                if term is None:
                    term = self._terms[offset, id(right)] = _Term(offset, right, self._values_of(right))
                chosen.append(term)
        return chosen

    def _below(self, column: Column, ceiling: np.ndarray) -> bool:
        return self.query_caps is None or bool((self._values_of(column) < ceiling).all())

    def _lookup(self, key: tuple, ceiling: np.ndarray) -> Column | None:
        """A column made earlier from the same inputs (fact 12), if it is valid under this width's caps."""
        column = self._by_inputs.get(key)
        if column is not None and self._below(column, ceiling):
            return column
        return None if self.query_caps is None else self._by_inputs.get(key + (id(ceiling),))

    def _remember(self, key: tuple, ceiling: np.ndarray, column: Column) -> None:
        self._by_inputs[key if self._below(column, ceiling) else key + (id(ceiling),)] = column

    def _stored(self, column: Column) -> Column:
        """The one object for columns of this content (fact 12: equal columns make equal columns that read them)."""
        return self._by_content.setdefault(column.knots.tobytes() + column.values.tobytes(), column)

    def _forget_unread(self, q: int) -> None:
        """Drop the values (and terms) of columns no later width reads: those read are at ``q + 1 - i - s`` and
        above, at most ``2 (i + s + 1)`` of them, so sweeping once twice that many are held bounds what is kept."""
        s, i = self.s, self.i
        if len(self._values) <= 4 * (i + s + 1):
            return
        tables = (self.fixed_start, self.freeable_start) if self.both else (self.fixed_start,)
        live = {id(c) for table in tables for c in table[max(s, q + 1 - i - s) : q + 1] if c is not None}
        for column_id in [column_id for column_id in self._values if column_id not in live]:
            del self._values[column_id]
        for key in [key for key in self._terms if key[1] not in live]:
            del self._terms[key]
