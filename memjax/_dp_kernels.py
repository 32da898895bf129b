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

Three exact facts make the columns ``N(., q)`` and ``F(., q)`` cheap to compute from columns to their left and from
themselves, processing columns in increasing ``q`` and, in a column, ``N`` before ``F`` (``F`` reads
``N(., q - i + s)``, the ``N`` column itself when ``i = s``; ``N`` never reads ``F``'s own column).

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
and decision. Columns are piecewise linear in ``t`` with few pieces (a handful on average), so a cell costs a few
dozen evaluations instead of ``O(t)``.

**2. Guess and verify (proof by induction).** ``L(t)`` depends only on ``L(k)``, ``k < t``, and on columns already
known. For a run of lengths ``t0 <= t < t1`` the solver writes a guess ``G`` (``L`` continuing its last increment)
into the column, evaluates the recurrence ``L'`` for the whole run at once from the guessed column, and keeps the
longest prefix where ``L' = G`` plus the first mismatching entry: by induction on ``t``, if ``G = L`` below ``t``
then ``L'(t)`` (and its decision) is the true one, so every kept entry is exact. (Under ``G`` the column has no
breakpoint at or after ``t0 - 1``, so the breakpoints of the known part are the candidate set of fact 1.) After a
mismatch the re-evaluated tail is the next guess for the same run (a Picard iteration, again verified before
anything is kept). Runs double while guesses hold and halve when they fail.

**3. F follows N until spent wins (proof by induction).** The split terms of ``F`` are those of ``N`` with ``F``'s
own column in place of ``N``'s. So if ``F(k, q) = N(k, q)`` for all ``k < t`` and the spent value at ``t`` is not
below ``N(t, q)``, then ``F(t, q) = N(t, q)`` with ``N``'s decision (a tie goes to ``N``'s option, spent being
last in the tie order). Hence ``F(., q)`` is copied from ``N(., q)`` below the first ``t*`` where spent is strictly
better, ``F(t*, q)`` is the spent value, and only ``t > t*`` is solved by facts 1 and 2 (in practice a small part
of the table: the spent option beats ``N`` in few columns).

Cost: ``O(length * quanta * K)`` element operations with ``K`` the number of candidates (a few to a few dozen),
plus a few dozen numpy calls per column; the tables themselves stay dense, as ``_Table`` requires.
"""

from __future__ import annotations

import numpy as np

_INF = 2**60
_NOTHING, _HIDDEN, _INTERNAL, _SPENT = 0, 1, 2, 3
_FIRST_RUN = 64
_MAX_RUN = 1 << 14


def _breakpoints(column: np.ndarray) -> np.ndarray:
    """Convex breakpoints ``{k >= 1 : column[k + 1] - column[k] > column[k] - column[k - 1]}`` (ascending)."""
    if column.shape[0] < 3:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.diff(column, 2) > 0) + 1


def _solve_column(column, t0, terms, spent, nothing, everything, scale):
    """Fill ``column[t0:]`` (one table at one width) by guess and verify (fact 2); returns the decisions
    ``(code, split)`` of ``t >= t0``.

    ``terms`` are the split terms ``(option, left_offset, right_column, right_candidates)``, the left column being
    ``column`` itself and ``right_candidates`` the right column's convex breakpoints followed by 1 and
    ``length + 1`` (so that ``t - z`` covers the ends ``t - 1`` and, once clipped, ``1``); ``spent`` is ``None`` or
    the spent option's value for every ``t`` (read for ``t >= t0 >= 2``). Candidates outside ``1 <= y < t`` are
    clipped into it: a clipped candidate is an end, which is a candidate anyway, so neither the minimum nor the
    smallest minimiser changes. Every candidate (and nothing, and spent) becomes one int64 key
    ``((value * 4 + option) * scale + y)``, so that one minimum per cell gives the value and the decision in the tie
    order: nothing, hidden, internal, spent; within an option the smallest ``y``.
    """
    length = column.shape[0] - 1
    base = t0
    codes = np.zeros(max(0, length + 1 - t0), np.int8)
    splits = np.zeros(max(0, length + 1 - t0), np.int32)
    if t0 > length:
        return codes, splits
    if not terms and spent is None:
        column[t0:] = nothing[t0:]
        return codes, splits
    run = _FIRST_RUN
    t1 = t0  # column[t0:t1] holds a guess (the last evaluation of a run that was not all confirmed)
    while t0 <= length:
        if t1 <= t0:  # a fresh run: continue the last increment
            t1 = min(length + 1, t0 + run)
            step = column[t0 - 1] - column[t0 - 2]
            column[t0:t1] = column[t0 - 1] + step * (everything[t0:t1] - (t0 - 1))
        ts = everything[t0:t1]
        guess = column[t0:t1].copy()
        best = nothing[t0:t1] * (4 * scale)
        if terms:
            own = _breakpoints(column[:t0])
            if own.shape[0] == 0:
                own = np.ones(1, np.int64)  # the end y = 1: changes nothing
            last = ts[:, None] - 1
            for option, offset, right, right_candidates in terms:
                for ys in (np.minimum(own[None, :] + offset, last),  # breakpoints of the own column
                           np.maximum(ts[:, None] - right_candidates[None, :], 1)):  # of the right one, and ends
                    # keys = ((y + left + right) * 4 + option) * scale + y, mostly in place
                    keys = column[ys - offset]
                    keys += right[ts[:, None] - ys]
                    keys *= 4 * scale
                    keys += ys * (4 * scale + 1) + option * scale
                    np.minimum(best, keys.min(axis=1), out=best)
        if spent is not None:
            np.minimum(best, (spent[t0:t1] * 4 + _SPENT) * scale + 1, out=best)
        value, rest = np.divmod(best, 4 * scale)
        wrong = np.flatnonzero(value != guess)
        keep = ts.shape[0] if wrong.size == 0 else int(wrong[0]) + 1
        # Entries past the first mismatch were evaluated from a partly wrong guess: they are the next
        # guess for the same run (a Picard iteration), verified in turn before being kept.
        column[t0:t1] = value
        option, y = np.divmod(rest[:keep], scale)
        codes[t0 - base: t0 - base + keep] = option
        splits[t0 - base: t0 - base + keep] = y
        if keep == ts.shape[0] and wrong.size == 0:
            run = min(_MAX_RUN, run * 2)
        elif run > _FIRST_RUN:
            run //= 2
        t0 += keep
    return codes, splits


def solve_columns(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool):
    """The DP tables of shape ``(length + 1, quanta + 1)``, see the module doc.

    The ``F`` column at width ``q`` equals the ``N`` column (values and decisions) below the first ``t*`` where the
    spent option beats ``N(t*, q)``: the split terms of ``F`` are those of ``N`` with ``F``'s own column in place of
    ``N``'s, so by induction on ``t`` they agree while spent does not win (a tie goes to ``N``'s option, spent being
    last); at ``t*`` ``F`` is the spent value. Only ``t > t*`` is solved (in practice a small part of the table).

    Returns:
      ``((cost, code, split), spent)``: the ``N`` table, and the ``F`` table as a second triple when both options
      are enabled and ``i >= s`` (``None`` otherwise: ``F = N`` or ``F`` is never consulted). The arrays are
      transposed views of column-major storage (no copy is made).
    """
    if hidden and internal and i < s:
        hidden = False  # MSM equals ISM here (module doc)
    both = hidden and internal
    n = length + 1
    tables = 2 if both else 1
    cost = np.full((tables, quanta + 1, n), _INF, np.int64)  # column-major while solving: cost[0, q] is N(., q)
    code = np.zeros((tables, quanta + 1, n), np.int8)
    split = np.zeros((tables, quanta + 1, n), np.int32)

    def result():
        triples = [(cost[k].T, code[k].T, split[k].T) for k in range(tables)]
        return triples[0], (triples[1] if both else None)

    if quanta < s:
        return result()
    cost[:, s:, : min(length, 1) + 1] = np.arange(min(length, 1) + 1)
    floor_code = _INTERNAL if internal else _HIDDEN
    everything = np.arange(n, dtype=np.int64)
    nothing = everything * (everything + 1) // 2
    floor = everything if internal else np.maximum(2 * everything - 1, 0)
    breakpoints: list[dict[int, np.ndarray]] = [{} for _ in range(tables)]
    freeable = tables - 1  # the table of a freeable start: F, or N itself without internal states
    # > every split; the largest finite key is (nothing[length] * 4 + 3) * scale < 2**63 for length < 10**6
    scale = n + 1
    ends = np.array([1, n], np.int64)
    spent = np.full(n, _INF, np.int64)
    for q in range(s, quanta + 1):
        full_length = (q - s) // i + 1 if internal else q // s  # the longest t with _full_quanta(t) <= q
        top = min(full_length, length)
        if top >= 2:
            cost[:, q, 2: top + 1] = floor[2: top + 1]
            code[:, q, 2: top + 1] = floor_code
            split[:, q, 2: top + 1] = 1
        t0 = max(2, top + 1)
        # hidden splits continue with a freeable checkpoint (F), internal ones with a fixed start (N)
        terms = []
        if hidden and q - s >= s:
            terms.append((_HIDDEN, 0, cost[freeable, q - s], np.concatenate([breakpoints[freeable][q - s], ends])))
        if internal and q - i >= s:
            terms.append((_INTERNAL, 1, cost[0, q - i], np.concatenate([breakpoints[0][q - i], ends])))
        codes, splits = _solve_column(cost[0, q], t0, terms, None, nothing, everything, scale)
        code[0, q, t0:] = codes
        split[0, q, t0:] = splits
        breakpoints[0][q] = _breakpoints(cost[0, q])
        if not both:
            continue
        cost[1, q, t0:] = cost[0, q, t0:]
        code[1, q, t0:] = code[0, q, t0:]
        split[1, q, t0:] = split[0, q, t0:]
        breakpoints[1][q] = breakpoints[0][q]  # the same column, unless spent wins below
        if q >= i and t0 <= length:
            spent[2:] = 1 + cost[0, q - i + s, 1:length]  # the N column is final, also when i == s
            wins = np.flatnonzero(spent[t0:] < cost[0, q, t0:])
            if wins.size:
                first = t0 + int(wins[0])
                cost[1, q, first] = spent[first]
                code[1, q, first] = _SPENT
                split[1, q, first] = 1
                codes, splits = _solve_column(cost[1, q], first + 1, terms, spent, nothing, everything, scale)
                code[1, q, first + 1:] = codes
                split[1, q, first + 1:] = splits
                breakpoints[1][q] = _breakpoints(cost[1, q])
    return result()
