"""Equality of the fast column-wise DP (``memjax._solver._solve_table``) with a plain DP of the same recurrences.

``reference_solve_table`` below is the oracle: the N / F recurrences of ``memjax._solver`` (the paper's BPTT-MSM
refined with spent checkpoints; HSM and ISM when one option is disabled) solved bottom-up in ``t`` by brute force
over every split, vectorised over ``q``, with no pruning and no candidate sets. Costs must be identical
everywhere; decisions must be optimal (their cost recomputes to the table's), and with the tie rule "nothing <
hidden < internal < spent, smallest split" they are also compared to the brute-force argmin.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from memjax import _solver
from memjax._solver import _full_quanta, _quantize

_INF = 2**60
_NOTHING, _HIDDEN, _INTERNAL, _SPENT = 0, 1, 2, 3
Table = collections.namedtuple("Table", "cost code split")


def reference_solve_table(length: int, quanta: int, s: int, i: int, hidden: bool, internal: bool):
    """Solve N and F for all ``t <= length`` and ``q <= quanta`` by brute force over the splits.

    Returns ``(N, F)`` as ``Table``s, ``F`` being ``None`` unless both options are enabled. For ``q`` at or above
    ``full(t)`` (every state stored) both tables hold the floor (``t``, or ``2t - 1`` without internal states) with
    split 1 and the floor option's code, the convention of the solver (the argmin there, except that "nothing"
    ties the floor at ``t = 2`` without internal states). When ``i < s`` the spent option reads columns to the
    right of ``q``: the table is solved on ``max(quanta, full(length))`` columns (from ``full(t - 1)`` on the
    column ``N(t - 1, .)`` is constant, so clamping the spent column there is exact) and cut to ``quanta``.
    """
    both = hidden and internal
    width = max(quanta, _full_quanta(length, s, i, internal)) if both and i < s else quanta
    cost = np.full((2, length + 1, width + 1), _INF, np.int64)  # [0] = N, [1] = F
    code = np.zeros((2, length + 1, width + 1), np.int8)
    split = np.zeros((2, length + 1, width + 1), np.int32)
    if width >= s:
        cost[:, : min(length, 1) + 1, s:] = np.arange(min(length, 1) + 1)[:, None]
    floor_code = _INTERNAL if internal else _HIDDEN
    N, F = cost[0], (cost[1] if both else cost[0])
    qs = np.arange(width + 1)
    for t in range(2, length + 1):
        full = _full_quanta(t, s, i, internal)
        ys = np.arange(1, t)[:, None]
        for k in (0, 1) if both else (0,):
            own = cost[k]
            best = np.full(width + 1, t * (t + 1) // 2, np.int64)
            best_code = np.zeros(width + 1, np.int8)
            best_split = np.zeros(width + 1, np.int32)
            candidates = []
            if hidden and width >= 2 * s:  # y + own(y, q) + F(t - y, q - s), q - s >= s
                values = np.full((t - 1, width + 1), _INF, np.int64)
                values[:, 2 * s:] = ys + own[1:t, 2 * s:] + F[t - ys[:, 0], s: width + 1 - s]
                candidates.append((_HIDDEN, values))
            if internal and width >= s + i:  # y + own(y - 1, q) + N(t - y, q - i), q - i >= s
                values = np.full((t - 1, width + 1), _INF, np.int64)
                values[:, s + i:] = ys + own[0: t - 1, s + i:] + N[t - ys[:, 0], s: width + 1 - i]
                candidates.append((_INTERNAL, values))
            for option, values in candidates:
                where = values.argmin(axis=0)
                value = values[where, qs]
                better = value < best
                best = np.where(better, value, best)
                best_code = np.where(better, option, best_code)
                best_split = np.where(better, where + 1, best_split)
            if k == 1:  # spent: 1 + N(t - 1, q - i + s), q >= i
                value = np.full(width + 1, _INF, np.int64)
                columns = qs[i:]
                value[i:] = 1 + N[t - 1, np.minimum(columns - i + s, width)]
                better = value < best
                best = np.where(better, value, best)
                best_code = np.where(better, _SPENT, best_code)
                best_split = np.where(better, 1, best_split)
            best[:s] = _INF
            best_code[:s] = 0
            best_split[:s] = 0
            if full <= width:
                best[full:] = t if internal else 2 * t - 1
                best_code[full:] = floor_code
                best_split[full:] = 1
            own[t] = best
            code[k, t] = best_code
            split[k, t] = best_split
    tables = [Table(cost[k, :, : quanta + 1].copy(), code[k, :, : quanta + 1].copy(),
                    split[k, :, : quanta + 1].copy()) for k in (0, 1)]
    return tables[0], (tables[1] if both else None)


def _assert_tables_equal(got, want, decisions=True):
    np.testing.assert_array_equal(got.cost, want.cost)
    if decisions:
        np.testing.assert_array_equal(got.code, want.code)
        np.testing.assert_array_equal(got.split, want.split)


def _free_table(table):
    return Table(table.free_cost, table.free_code, table.free_split) if table.free_cost is not None else None


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
        want, want_free = reference_solve_table(length, quanta, s, i, hidden, internal)
        got = _solver._solve_table(length, quanta, s, i, hidden, internal)
        _assert_tables_equal(got, want)
        if hidden and internal:
            _assert_tables_equal(_free_table(got), want_free)
        else:
            assert got.free_cost is None
        assert got.cost.dtype == np.int64 and got.code.dtype == np.int8 and got.split.dtype == np.int32
        assert got.cost.shape == got.code.shape == got.split.shape == (length + 1, quanta + 1)


@pytest.mark.parametrize("s,i", [(1, 1), (1, 2), (2, 3), (3, 7), (2, 15), (1, 10), (3, 3)])
def test_fast_table_equals_reference_every_width(s, i):
    """Every budget from nothing to store-all for short sequences (all quanta columns, all three option sets)."""
    length = 40
    quanta = _full_quanta(length, s, i, True) + 2
    for hidden, internal in _OPTIONS:
        want, want_free = reference_solve_table(length, quanta, s, i, hidden, internal)
        got = _solver._solve_table(length, quanta, s, i, hidden, internal)
        _assert_tables_equal(got, want)
        if hidden and internal:
            _assert_tables_equal(_free_table(got), want_free)


@pytest.mark.parametrize("s,i", [(2, 1), (4, 3), (8, 5)])
def test_internal_smaller_than_hidden_is_ism(s, i):
    """With ``i < s`` MSM equals ISM (an internal state holds its hidden state and is smaller): the fast solver
    drops the hidden option, and its costs still equal the full N / F recurrence of the reference."""
    length = 30
    quanta = _full_quanta(length, s, i, True) + 2
    want, _ = reference_solve_table(length, quanta, s, i, True, True)
    ism, _ = reference_solve_table(length, quanta, s, i, False, True)
    np.testing.assert_array_equal(want.cost, ism.cost)
    got = _solver._solve_table(length, quanta, s, i, True, True)
    _assert_tables_equal(got, ism)
    assert got.free_cost is None


@pytest.mark.parametrize("alpha", (2.0, 7.5))
def test_fast_decisions_cost_what_the_table_says(alpha):
    """Each recorded decision recomputes to the tabled cost (optimality of the decisions, not only the costs)."""
    s, i = _quantize(alpha)
    length, quanta = 400, (s + i * 399) // 10
    table = _solver._solve_table(length, quanta, s, i, True, True)
    N, F = table.cost, table.free_cost
    for fixed, (cost, code, split) in ((True, (table.cost, table.code, table.split)),
                                       (False, (table.free_cost, table.free_code, table.free_split))):
        for t, q in itertools.product(range(2, length + 1, 7), range(s, quanta + 1, 5)):
            y = int(split[t, q])
            if code[t, q] == _NOTHING:
                value = t * (t + 1) // 2
            elif code[t, q] == _HIDDEN:
                value = y + cost[y, q] + F[t - y, q - s]
            elif code[t, q] == _INTERNAL:
                value = y + cost[y - 1, q] + N[t - y, q - i]
            else:
                assert not fixed and code[t, q] == _SPENT and y == 1
                value = 1 + N[t - 1, q - i + s]
            assert value == cost[t, q], (t, q, fixed)
        assert np.all(cost[:, s:] <= N[:, s:])  # a freeable start never costs more
    assert np.any(F[:, s:] < N[:, s:])
