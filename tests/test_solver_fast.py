"""Equality of the fast column-wise DP (``memjax._dp_kernels``) with a plain DP of the same recurrences.

``reference_solve_table`` below is the oracle: the N / F recurrences of ``docs/solver.md`` (the paper's BPTT-MSM
refined with spent checkpoints; HSM and ISM when one option is disabled) solved bottom-up in ``t`` by brute force
over every split, vectorised over ``q``, with no pruning and no candidate sets. Costs must be identical
everywhere; decisions must be optimal (their cost recomputes to the table's), and with the tie rule "nothing <
hidden < internal < spent, smallest split" they are also compared to the brute-force argmin. Facts are those of
``docs/solver.md``.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from memjax import _closed_forms, _dp_kernels, _solver
from memjax._closed_forms import _full_quanta
from memjax._solver import _quantize

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
                values[:, 2 * s :] = ys + own[1:t, 2 * s :] + F[t - ys[:, 0], s : width + 1 - s]
                candidates.append((_HIDDEN, values))
            if internal and width >= s + i:  # y + own(y - 1, q) + N(t - y, q - i), q - i >= s
                values = np.full((t - 1, width + 1), _INF, np.int64)
                values[:, s + i :] = ys + own[0 : t - 1, s + i :] + N[t - ys[:, 0], s : width + 1 - i]
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
    tables = [
        Table(cost[k, :, : quanta + 1].copy(), code[k, :, : quanta + 1].copy(), split[k, :, : quanta + 1].copy())
        for k in (0, 1)
    ]
    return tables[0], (tables[1] if both else None)


def _assert_tables_equal(got, want, decisions=True):
    np.testing.assert_array_equal(got.cost, want.cost)
    if decisions:
        np.testing.assert_array_equal(got.code, want.code)
        np.testing.assert_array_equal(got.split, want.split)


def _fast(length, quanta, s, i, hidden, internal):
    """The fast solver's ``N`` and ``F`` tables, expanded to dense arrays (``F`` ``None`` unless a table of its own)."""
    got = _solver._solve_table(length, quanta, s, i, hidden, internal)
    assert got.shape == (length + 1, quanta + 1)
    fixed, free = got.dense()
    return Table(*fixed), (Table(*free) if free is not None else None)


_ALPHAS = (1.0, 1.5, 2.0, 7 / 3, 7.5, 10.0)
_OPTIONS = ((True, True), (True, False), (False, True))


def _grid(alpha):
    s, i = _quantize(alpha)
    store_all = s + i * 299  # quanta that store every internal state of 300 steps
    return [
        (300, max(s, store_all // 100)),
        (300, store_all // 20 + 1),
        (200, store_all // 5),
        (120, 4 * s + 3),
        (60, _full_quanta(60, s, i, True) + 5),
        (1, 3 * s),
        (2, 2 * s),
        (5, s - 1),
    ]


@pytest.mark.parametrize("alpha", _ALPHAS)
@pytest.mark.parametrize("hidden,internal", _OPTIONS)
def test_fast_table_equals_reference(alpha, hidden, internal):
    s, i = _quantize(alpha)
    for length, quanta in _grid(alpha):
        want, want_free = reference_solve_table(length, quanta, s, i, hidden, internal)
        got, got_free = _fast(length, quanta, s, i, hidden, internal)
        _assert_tables_equal(got, want)
        if hidden and internal:
            _assert_tables_equal(got_free, want_free)
        else:
            assert got_free is None


@pytest.mark.parametrize("s,i", [(1, 1), (1, 2), (2, 3), (3, 7), (2, 15), (1, 10), (3, 3)])
def test_fast_table_equals_reference_every_width(s, i):
    """Every budget from nothing to store-all for short sequences (all quanta columns, all three option sets)."""
    length = 40
    quanta = _full_quanta(length, s, i, True) + 2
    for hidden, internal in _OPTIONS:
        want, want_free = reference_solve_table(length, quanta, s, i, hidden, internal)
        got, got_free = _fast(length, quanta, s, i, hidden, internal)
        _assert_tables_equal(got, want)
        if hidden and internal:
            _assert_tables_equal(got_free, want_free)


@pytest.mark.parametrize("s,i", [(2, 1), (4, 3), (8, 5)])
def test_internal_smaller_than_hidden_is_ism(s, i):
    """With ``i < s`` MSM equals ISM (an internal state holds its hidden state and is smaller): the fast solver
    drops the hidden option, and its costs still equal the full N / F recurrence of the reference."""
    length = 30
    quanta = _full_quanta(length, s, i, True) + 2
    want, _ = reference_solve_table(length, quanta, s, i, True, True)
    ism, _ = reference_solve_table(length, quanta, s, i, False, True)
    np.testing.assert_array_equal(want.cost, ism.cost)
    got, got_free = _fast(length, quanta, s, i, True, True)
    _assert_tables_equal(got, ism)
    assert got_free is None


@pytest.mark.parametrize("alpha", (2.0, 7.5))
def test_fast_decisions_cost_what_the_table_says(alpha):
    """Each recorded decision recomputes to the tabled cost (optimality of the decisions, not only the costs)."""
    s, i = _quantize(alpha)
    length, quanta = 400, (s + i * 399) // 10
    table, free = _fast(length, quanta, s, i, True, True)
    N, F = table.cost, free.cost
    for fixed, (cost, code, split) in ((True, table), (False, free)):
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


def test_sparse_runs_are_exercised_and_agree_with_dense_runs(monkeypatch):
    """Fact 13 (sparse verification at the events) is used, and gives the tables that dense runs give."""
    sparse = []
    original = _dp_kernels._events

    def counting(*args):
        points = original(*args)
        sparse.append(points is not None)
        return points

    s, i = _quantize(7.5)
    monkeypatch.setattr(_dp_kernels, "_events", counting)
    length, quanta = 1500, (s + i * 1499) // 10
    got = _solver._solve_table(length, quanta, s, i, True, True)
    assert sum(sparse) > 100 and not all(sparse)
    monkeypatch.setattr(_dp_kernels, "_events", lambda *args: None)
    want = _solver._solve_table(length, quanta, s, i, True, True)
    for q in range(s, quanta + 1):
        assert got.fixed_start[q] == want.fixed_start[q] and got.freeable_start[q] == want.freeable_start[q], q
    for t in range(2, length + 1, 37):
        for q in range(s, quanta + 1, 41):
            for freeable in (False, True):
                assert got.decide(t, q, freeable) == want.decide(t, q, freeable)


@pytest.mark.parametrize("alpha", (1.0, 2.5, 7.5))
@pytest.mark.parametrize("hidden,internal", _OPTIONS)
def test_capped_tables_are_exact_below_the_cap(alpha, hidden, internal):
    """Fact 14: with ``slack``, every cell is ``min(C(t, q), slack + t)``, and decisions are exact below the cap."""
    s, i = _quantize(alpha)
    length, quanta = 150, (s + i * 149) // 8
    want, want_free = reference_solve_table(length, quanta, s, i, hidden, internal)
    ts = np.arange(length + 1)[:, None]
    for slack in (1, 20, 151, 700):
        got, got_free = _fast_capped(length, quanta, s, i, hidden, internal, slack)
        for g, w in ((got, want), (got_free, want_free)) if want_free is not None else ((got, want),):
            ceiling = np.where(w.cost >= _INF, _INF, slack + ts)
            np.testing.assert_array_equal(g.cost[:, s:], np.minimum(w.cost, ceiling)[:, s:])
            below = w.cost < slack + ts
            below[:2] = False
            np.testing.assert_array_equal(g.code[below], w.code[below])
            np.testing.assert_array_equal(g.split[below], w.split[below])


def _fast_capped(length, quanta, s, i, hidden, internal, slack):
    got = _solver._solve_table(length, quanta, s, i, hidden, internal, slack)
    fixed, free = got.dense()
    return Table(*fixed), (Table(*free) if free is not None else None)


def test_costs_grow_by_at_least_one_per_step():
    """Fact 6, on which fact 14's early stop relies: ``C(t + 1, q) >= C(t, q) + 1`` (dropping the last step saves
    its forward)."""
    for alpha in (1.0, 7 / 3, 7.5):
        s, i = _quantize(alpha)
        for hidden, internal in _OPTIONS:
            want, want_free = reference_solve_table(120, (s + i * 119) // 4, s, i, hidden, internal)
            for table in (want, want_free) if want_free is not None else (want,):
                finite = table.cost[:, s:]
                assert np.all(np.diff(finite, axis=0) >= 1)


def test_costs_grow_by_at_least_two_beyond_the_floor():
    """Fact 7: with internal states, ``N(t + 1, q) >= N(t, q) + 2`` from the floor length ``full = (q - s) // i +
    1`` on, and ``F`` likewise from ``full + 1`` (at ``full`` a spent start stores one more step)."""
    for alpha in (1.0, 7 / 3, 2.5, 7.5):
        s, i = _quantize(alpha)
        for hidden in (True, False):
            want, want_free = reference_solve_table(150, (s + i * 149) // 3, s, i, hidden, True)
            for q in range(s, want.cost.shape[1]):
                full = (q - s) // i + 1
                assert np.all(np.diff(want.cost[full:, q]) >= 2), (alpha, hidden, q)
                if want_free is not None:
                    assert np.all(np.diff(want_free.cost[full + 1 :, q]) >= 2), (alpha, hidden, q)


def _query_caps(length, quanta, s, i, hidden, slack):
    """Fact 15's caps for the query ``(length, quanta)``, written out independently of ``memjax._columns``."""
    most = slack - 1
    per = (i - s) if hidden and i > s else i
    t = np.arange(length + 1)[:, None]
    q = np.arange(quanta + 1)[None, :]
    excess = np.maximum(np.minimum(most, np.maximum(most - t, most - length + t + (quanta - q) // per)), -1)
    return t + excess + 1


@pytest.mark.parametrize(
    "alpha,hidden", [(2.5, True), (7 / 3, True), (7.5, True), (2.5, False), (7.5, False), (0.5, False)]
)
def test_query_tables_are_exact_below_their_caps(alpha, hidden):
    """Fact 15: a table capped for one query holds ``min(C(t, q), cap(t, q))`` in every cell of N and F, the exact
    decision wherever it is below the cap, and the query's cell is exact whenever its cost is below ``slack + t``."""
    s, i = _quantize(alpha)
    length, quanta = 160, (s + i * 159) // 10
    want, want_free = reference_solve_table(length, quanta, s, i, hidden, True)
    for slack in (3, 40, 161, 400):
        got_table = _solver._solve_table(length, quanta, s, i, hidden, True, slack, query=True)
        assert got_table.query_caps is not None
        fixed, free = got_table.dense()
        cap = _query_caps(length, quanta, s, i, hidden and i > s, slack)
        for g, w in (
            ((Table(*fixed), want), (Table(*free), want_free)) if free is not None else ((Table(*fixed), want),)
        ):
            np.testing.assert_array_equal(g.cost[:, s:], np.minimum(w.cost, cap)[:, s:])
            below = w.cost < cap
            below[:2] = False
            below[:, :s] = False
            np.testing.assert_array_equal(g.code[below], w.code[below])
            np.testing.assert_array_equal(g.split[below], w.split[below])
        exact = want.cost[length, quanta] < slack + length
        assert got_table.exact(length, quanta) == exact
        capped = np.minimum(want.cost, cap)
        assert np.count_nonzero(capped[:, s:] < np.minimum(want.cost, slack + np.arange(length + 1)[:, None])[:, s:])


@pytest.mark.parametrize("alpha", (1.0, 2.0, 7 / 3, 7.5))
def test_cost_bound_is_an_upper_bound(alpha):
    """Fact 5: the bound used to cap tables (``_closed_forms._cost_bound``: ISM's optimum, binomial, Chen's and the
    chain of checkpoints) is never below the optimum."""
    s, i = _quantize(alpha)
    length, quanta = 200, (s + i * 199) // 3
    want, _ = reference_solve_table(length, quanta, s, i, True, True)
    for t in range(1, length + 1, 7):
        for q in range(s, quanta + 1, 3):
            assert want.cost[t, q] <= _closed_forms._cost_bound(t, q, s, i), (t, q)
            if q >= 2 * s:
                assert want.cost[t, q] <= _closed_forms._chain_cost(t, q, s, i), (t, q)


@pytest.mark.parametrize("alpha", (1.0, 7 / 3, 7.5))
def test_ism_cost_equals_the_recurrence(alpha):
    """Fact 16: BPTT-ISM's closed form equals its recurrence on every cell of a 300-step table, and the split of
    ``_ism_split`` reaches it."""
    s, i = _quantize(alpha)
    length = 300
    want, _ = reference_solve_table(length, s + i * 40, s, i, False, True)
    for q in range(s, s + i * 40 + 1):
        slots = (q - s) // i
        got = [_closed_forms.ism_cost(t, slots) for t in range(length + 1)]
        np.testing.assert_array_equal(want.cost[:, q], got, err_msg=f"q={q}")
        for t in range(slots + 2, length + 1) if slots >= 1 else ():
            y = _closed_forms._ism_split(t, slots)
            assert 1 <= y < t and y + got[y - 1] + _closed_forms.ism_cost(t - y, slots - 1) == got[t], (t, slots)
