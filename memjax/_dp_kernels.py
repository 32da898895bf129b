"""Column-wise exact solver of the BPTT-MSM / HSM / ISM recurrence (numpy only; used by ``_solver._solve_table``).

Notation (memory in quanta: a hidden state is ``s``, an internal state ``i``, the start state counts ``s``)::

    C(0, q) = 0,  C(1, q) = 1 for q >= s (infinite below s)
    Q_h(t, q, y) = y + C(y, q)     + C(t - y, q - s)      1 <= y < t   (if hidden)
    Q_i(t, q, y) = y + C(y - 1, q) + C(t - y, q - i)      1 <= y < t   (if internal)
    C(t, q) = min(t (t + 1) / 2, min_y Q_h, min_y Q_i)

ties going to nothing, then hidden, then internal, and within an option to the smallest ``y``. For ``q`` at or
above ``full(t)`` (every state stored) ``C`` is its floor (``t``, or ``2t - 1`` without internal states) with
split 1, exactly as the recurrence gives (no other split reaches the floor).

Two exact facts make the column ``D = C(., q)`` cheap to compute from ``A = C(., q - s)``, ``B = C(., q - i)`` and
itself, processing columns in increasing ``q`` (a column only needs columns to its left and its own smaller ``t``).

**1. Breakpoint candidates (proof).** Fix ``t`` and write ``f(y) = y + D(y) + A(t - y)`` on the integers
``1 <= y <= t - 1``, with increments ``delta(y) = f(y + 1) - f(y) = 1 + d(y + 1) - a(t - y)`` where
``d(k) = D(k) - D(k - 1)`` and ``a(k) = A(k) - A(k - 1)``. Let ``y*`` be the *smallest* minimiser. If
``1 < y* < t - 1`` then ``f(y* - 1) > f(y*) <= f(y* + 1)``, i.e. ``delta(y* - 1) < 0 <= delta(y*)``, so
``delta(y* - 1) != delta(y*)``, which needs ``d(y*) != d(y* + 1)`` (``y*`` is a breakpoint of ``D``) or
``a(t - y* + 1) != a(t - y*)`` (``t - y*`` is a breakpoint of ``A``). Hence the minimum of ``Q_h`` and its
smallest minimiser are found among ``{1, t - 1} U BP(D) U {t - z : z in BP(A)}`` with
``BP(F) = {k : F(k + 1) - F(k) != F(k) - F(k - 1)}``. Sharper: ``delta(y*) - delta(y* - 1) > 0`` equals
``(d(y* + 1) - d(y*)) + (a(t - y* + 1) - a(t - y*)) > 0``, so one bracket is positive and only *convex*
breakpoints ``BP+(F) = {k : F(k + 1) - F(k) > F(k) - F(k - 1)}`` are needed: candidates
``{1, t - 1} U BP+(D) U {t - z : z in BP+(A)}``. The same argument for ``g(y) = y + D(y - 1) + B(t - y)``
(increment ``1 + d(y) - b(t - y)``) gives ``{1, t - 1} U (BP+(D) + 1) U {t - z : z in BP+(B)}``. Columns are piecewise linear in ``t`` with few pieces
(a handful on average), so a cell costs a few dozen evaluations instead of ``O(t)``.

**2. Guess and verify (proof by induction).** ``D(t)`` depends only on ``D(k)``, ``k < t``. For a run of
lengths ``t0 <= t < t1`` the solver writes a guess ``G`` (``D`` continuing its last increment) into the column,
evaluates the recurrence ``D'`` for the whole run at once from the guessed column, and keeps the longest prefix
where ``D' = G`` plus the first mismatching entry: by induction on ``t``, if ``G = D`` below ``t`` then
``D'(t)`` (and its decision) is the true one, so every kept entry is exact. (Under ``G`` the column has no
breakpoint at or after ``t0 - 1``, so the breakpoints of the known part are the candidate set of fact 1.) After a
mismatch the re-evaluated tail is the next guess for the same run (a Picard iteration, again verified before
anything is kept). Runs double while guesses hold and halve when they fail.

Cost: ``O(length * quanta * K)`` element operations with ``K`` the number of candidates (a few to a few dozen),
plus a few dozen numpy calls per column; the table itself stays dense, as ``_Table`` requires.
"""

from __future__ import annotations

import numpy as np

_INF = 2**60
_NOTHING, _HIDDEN, _INTERNAL = 0, 1, 2
_FIRST_RUN = 64
_MAX_RUN = 1 << 14


def _breakpoints(column: np.ndarray) -> np.ndarray:
    """Convex breakpoints ``{k >= 1 : column[k + 1] - column[k] > column[k] - column[k - 1]}`` (ascending)."""
    if column.shape[0] < 3:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.diff(column, 2) > 0) + 1


def _best_over(ts: np.ndarray, ys: np.ndarray, left: np.ndarray, left_offset: int, right: np.ndarray, scale: int):
    """Minimum over candidate splits ``ys`` (L, K) of ``y + left[y - left_offset] + right[t - y]``, and the
    smallest ``y`` attaining it; candidates outside ``1 <= y < t`` never win. ``scale`` exceeds every ``y``; a
    value times ``scale`` plus ``y`` is one int64 key whose minimum gives both (values stay below 2**62 / scale).
    """
    t = ts[:, None]
    invalid = (ys < 1) | (ys >= t)
    ys = np.where(invalid, 1, ys)
    keys = (ys + left[ys - left_offset] + right[t - ys]) * scale + ys
    keys[invalid] = np.iinfo(np.int64).max
    best = keys.min(axis=1)
    return best // scale, best % scale


def solve_columns(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool):
    """The DP table as ``(cost, code, split)`` arrays of shape ``(length + 1, quanta + 1)``; see the module doc."""
    n = length + 1
    cost = np.full((quanta + 1, n), _INF, np.int64)  # column-major while solving: cost[q] is C(., q)
    code = np.zeros((quanta + 1, n), np.int8)
    split = np.zeros((quanta + 1, n), np.int32)
    if quanta < s:
        return cost.T.copy(), code.T.copy(), split.T.copy()
    cost[s:, : min(length, 1) + 1] = np.arange(min(length, 1) + 1)
    floor_code = _INTERNAL if internal else _HIDDEN
    everything = np.arange(n, dtype=np.int64)
    nothing = everything * (everything + 1) // 2
    floor = everything if internal else np.maximum(2 * everything - 1, 0)
    breakpoints: dict[int, np.ndarray] = {}
    scale = n + 1  # > every split; the largest finite cost is nothing[length] < 2**62 / scale for length < 10**6
    for q in range(s, quanta + 1):
        column = cost[q]
        full_length = (q - s) // i + 1 if internal else q // s  # the longest t with _full_quanta(t) <= q
        top = min(full_length, length)
        if top >= 2:
            column[2: top + 1] = floor[2: top + 1]
            code[q, 2: top + 1] = floor_code
            split[q, 2: top + 1] = 1
        t0 = max(2, top + 1)
        right_h = cost[q - s] if hidden and q - s >= s else None
        right_i = cost[q - i] if internal and q - i >= s else None
        if t0 <= length and right_h is None and right_i is None:
            column[t0:] = nothing[t0:]
        elif t0 <= length:
            bp_h = breakpoints[q - s] if right_h is not None else None
            bp_i = breakpoints[q - i] if right_i is not None else None
            run = _FIRST_RUN
            t1 = t0  # column[t0:t1] holds a guess (the last evaluation of a run that was not all confirmed)
            while t0 <= length:
                if t1 <= t0:  # a fresh run: continue the last increment
                    t1 = min(length + 1, t0 + run)
                    step = column[t0 - 1] - column[t0 - 2]
                    column[t0:t1] = column[t0 - 1] + step * (everything[t0:t1] - (t0 - 1))
                ts = everything[t0:t1]
                guess = column[t0:t1]
                own = _breakpoints(column[:t0])
                ends = np.stack([np.ones_like(ts), ts - 1], axis=1)
                best = nothing[t0:t1].copy()
                best_code = np.zeros(ts.shape[0], np.int8)
                best_split = np.zeros(ts.shape[0], np.int64)
                if right_h is not None:
                    ys = np.concatenate([np.broadcast_to(own, (ts.shape[0], own.shape[0])),
                                         ts[:, None] - bp_h[None, :], ends], axis=1)
                    value, y = _best_over(ts, ys, column, 0, right_h, scale)
                    better = value < best
                    best = np.where(better, value, best)
                    best_code[better] = _HIDDEN
                    best_split = np.where(better, y, best_split)
                if right_i is not None:
                    ys = np.concatenate([np.broadcast_to(own + 1, (ts.shape[0], own.shape[0])),
                                         ts[:, None] - bp_i[None, :], ends], axis=1)
                    value, y = _best_over(ts, ys, column, 1, right_i, scale)
                    better = value < best
                    best = np.where(better, value, best)
                    best_code[better] = _INTERNAL
                    best_split = np.where(better, y, best_split)
                wrong = np.flatnonzero(best != guess)
                keep = ts.shape[0] if wrong.size == 0 else int(wrong[0]) + 1
                # Entries past the first mismatch were evaluated from a partly wrong guess: they are the next
                # guess for the same run (a Picard iteration), verified in turn before being kept.
                column[t0:t1] = best
                code[q, t0: t0 + keep] = best_code[:keep]
                split[q, t0: t0 + keep] = best_split[:keep]
                if keep == ts.shape[0] and wrong.size == 0:
                    run = min(_MAX_RUN, run * 2)
                elif run > _FIRST_RUN:
                    run //= 2
                t0 += keep
        breakpoints[q] = _breakpoints(column)
    return np.ascontiguousarray(cost.T), np.ascontiguousarray(code.T), np.ascontiguousarray(split.T)
