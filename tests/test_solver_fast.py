"""Equality of the fast column-wise DP (``memjax._solver._solve_table``) with the original vectorised DP.

``reference_solve_table`` below is a verbatim copy of the implementation that the fast solver replaced; it is the
oracle. Costs must be identical everywhere; decisions must be optimal (their cost recomputes to the table's), and
with the tie rule "nothing < hidden < internal, smallest split" they are also compared to a brute-force argmin.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from memjax import _solver
from memjax._solver import _full_quanta, _quantize

_INF = 2**60
_NOTHING, _HIDDEN, _INTERNAL = 0, 1, 2
_ELEMENTS_PER_CHUNK = 1 << 20
_FIRST_CHUNK = 8
Table = collections.namedtuple("Table", "cost code split")


def reference_solve_table(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool) -> _Table:
    """Solve the MSM recurrence (HSM / ISM when one option is disabled) bottom-up in t, vectorised over q.

    Work is pruned with two exact bounds: ``C(t, q)`` equals its floor once ``q`` holds every state
    (``_full_quanta``), and a split ``y`` costs at least ``t + y - 1``, so splits beyond the best cost found so
    far are never evaluated.
    """
    cost = np.full((length + 1, quanta + 1), _INF, np.int64)
    code = np.zeros((length + 1, quanta + 1), np.int8)
    split = np.zeros((length + 1, quanta + 1), np.int32)
    if quanta < s:
        return Table(cost, code, split)
    cost[: min(length, 1) + 1, s:] = np.arange(min(length, 1) + 1)[:, None]
    floor_code = _INTERNAL if internal else _HIDDEN
    for t in range(2, length + 1):
        full = _full_quanta(t, s, i, internal)
        if full <= quanta:
            cost[t, full:] = t if internal else 2 * t - 1
            code[t, full:] = floor_code
            split[t, full:] = 1
        hi = min(quanta, full - 1)
        if hi < s:
            continue
        best = np.full(hi - s + 1, t * (t + 1) // 2, np.int64)  # columns q = s..hi
        best_code = np.zeros(hi - s + 1, np.int8)
        best_split = np.zeros(hi - s + 1, np.int32)
        y0, chunk = 1, _FIRST_CHUNK
        while y0 < t:
            # A split y >= y0 costs at least t + C(y0 - 1, q) (the right part needs t - y forwards at least, and
            # C is non-decreasing in t): only columns whose best cost so far is above that bound can improve.
            open_columns = np.flatnonzero(best > t + cost[y0 - 1, s: hi + 1])
            if open_columns.size == 0:
                break
            width = int(open_columns[-1]) + 1
            y1 = min(t, y0 + max(1, min(chunk, _ELEMENTS_PER_CHUNK // width)))
            chunk *= 2
            ys = np.arange(y0, y1)
            for option, shift, left in ((_HIDDEN, s, ys), (_INTERNAL, i, ys - 1)):
                if not (hidden if option == _HIDDEN else internal):
                    continue
                lo = s + shift  # the right part needs its own starting state
                if lo > s + width - 1:
                    continue
                q = slice(lo, s + width)
                values = ys[:, None] + cost[left, q] + cost[t - ys, lo - shift: s + width - shift]
                where = values.argmin(axis=0)
                candidate = values[where, np.arange(values.shape[1])]
                columns = slice(lo - s, width)
                better = candidate < best[columns]
                best[columns] = np.where(better, candidate, best[columns])
                best_code[columns] = np.where(better, option, best_code[columns])
                best_split[columns] = np.where(better, ys[where], best_split[columns])
            y0 = y1
        cost[t, s: hi + 1] = best
        code[t, s: hi + 1] = best_code
        split[t, s: hi + 1] = best_split
    return Table(cost, code, split)



_ALPHAS = (1.0, 1.5, 2.0, 7 / 3, 7.5, 10.0)
_OPTIONS = ((True, True), (True, False), (False, True))


def _grid(alpha):
    s, i = _quantize(alpha)
    store_all = s + i * 299  # quanta that store every internal state of 300 steps
    return [(300, max(s, store_all // 100)), (300, store_all // 20 + 1), (200, store_all // 5),
            (120, 4 * s + 3), (60, _full_quanta(60, s, i, True) + 5), (1, 3 * s), (2, 2 * s), (5, s - 1)]


@pytest.mark.parametrize("alpha", _ALPHAS)
@pytest.mark.parametrize("hidden,internal", _OPTIONS)
def test_fast_table_equals_reference(alpha, hidden, internal):
    s, i = _quantize(alpha)
    for length, quanta in _grid(alpha):
        want = reference_solve_table(length, quanta, s, i, hidden, internal)
        got = _solver._solve_table(length, quanta, s, i, hidden, internal)
        np.testing.assert_array_equal(got.cost, want.cost)
        np.testing.assert_array_equal(got.code, want.code)
        np.testing.assert_array_equal(got.split, want.split)
        assert got.cost.dtype == np.int64 and got.code.dtype == np.int8 and got.split.dtype == np.int32
        assert got.cost.shape == (length + 1, quanta + 1) and got.cost.flags.c_contiguous


@pytest.mark.parametrize("s,i", [(1, 1), (1, 2), (2, 3), (3, 7), (2, 15), (1, 10)])
def test_fast_table_equals_reference_every_width(s, i):
    """Every budget from nothing to store-all for short sequences (all quanta columns, all three option sets)."""
    length = 40
    quanta = _full_quanta(length, s, i, True) + 2
    for hidden, internal in _OPTIONS:
        want = reference_solve_table(length, quanta, s, i, hidden, internal)
        got = _solver._solve_table(length, quanta, s, i, hidden, internal)
        np.testing.assert_array_equal(got.cost, want.cost)
        np.testing.assert_array_equal(got.code, want.code)
        np.testing.assert_array_equal(got.split, want.split)


@pytest.mark.parametrize("alpha", (2.0, 7.5))
def test_fast_decisions_cost_what_the_table_says(alpha):
    """Each recorded decision recomputes to the tabled cost (optimality of the decisions, not only the costs)."""
    s, i = _quantize(alpha)
    length, quanta = 400, (s + i * 399) // 10
    table = _solver._solve_table(length, quanta, s, i, True, True)
    cost, code, split = table.cost, table.code, table.split
    for t, q in itertools.product(range(2, length + 1, 7), range(s, quanta + 1, 5)):
        y = int(split[t, q])
        if code[t, q] == _NOTHING:
            value = t * (t + 1) // 2
        elif code[t, q] == _HIDDEN:
            value = y + cost[y, q] + cost[t - y, q - s]
        else:
            value = y + cost[y - 1, q] + cost[t - y, q - i]
        assert value == cost[t, q], (t, q)
