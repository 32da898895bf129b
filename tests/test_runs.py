"""Tables kept as periodic runs (memjax._runs) and decoded in the executors' loops (memjax._executor.loop): the
same rows as the dense tables, for random tables made of runs, for the pipelines' and the interpreter's own tables,
and with gradients through the interpreter's run-built tables equal to lax.scan's."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from memjax import _executor, _tables
from memjax._runs import PERIODS, Runs, compact, find_runs
from memjax._tables import compile_tables
from memjax.planning import solve
from tests.helpers import KEY, NIN, B, assert_trees_close, lstm_step, tiny_lstm


def piecewise(rng, n: int) -> np.ndarray:
    """A table of ``n`` entries made of periodic runs of random periods (up to 4), lengths, firsts and steps."""
    pieces, size = [], 0
    while size < n:
        period, length = rng.integers(1, 5), rng.integers(1, 40)
        firsts, steps = rng.integers(-50, 50, period), rng.integers(-3, 4, period)
        k = np.arange(length)
        pieces.append(firsts[k % period] + steps[k % period] * (k // period))
        size += length
    return np.concatenate(pieces)[:n].astype(np.int32)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("period", PERIODS + (3, 4))
def test_runs_give_back_the_table(seed, period):
    rng = np.random.default_rng(seed)
    table = piecewise(rng, int(rng.integers(1, 400)))
    runs = find_runs(table, period)
    np.testing.assert_array_equal(runs.dense(), table)
    assert runs.dense().dtype == table.dtype
    # Each run is as long as it can be: extending it by the next entry breaks it.
    ends = np.append(runs.starts[1:], table.size)
    for a, b in zip(runs.starts[:-1], ends[:-1]):
        if b - a >= 2 * period:
            assert table[b] - table[b - period] != table[b - period] - table[b - 2 * period]


def test_period_two_holds_interleaved_runs():
    """Binomial checkpointing's rows alternate two actions: period 1 cuts at every entry, period 2 keeps one run."""
    k = np.arange(10_000)
    start = (k // 2).astype(np.int32)  # a, a, a + 1, a + 1, ...: save and advance from each position
    assert find_runs(start, 1).runs == 5_000
    assert find_runs(start, 2).runs == 1
    best = compact(start)
    assert best.period == 2 and best.runs == 1
    np.testing.assert_array_equal(best.dense(), start)


def test_compact_declines_tables_without_runs():
    rng = np.random.default_rng(0)
    assert compact(rng.integers(0, 1000, 5000).astype(np.int32)) is None
    assert find_runs(rng.integers(0, 1000, 5000), 1, max_runs=100) is None


@pytest.mark.parametrize("width", [1, 3, 16])
def test_loop_decodes_runs_row_by_row(width, monkeypatch):
    """The loop sees the same rows from tables kept as runs (of every period, compacted by the loop itself or
    given as runs) as from the dense tables, next to a dense jax array input."""
    monkeypatch.setattr(_executor, "COMPACT_BYTES", 0)
    rng = np.random.default_rng(width)
    rows = 300
    tables = [piecewise(rng, rows * width).reshape(rows, width) for _ in range(3)]
    tables[1] = np.repeat(np.arange(rows * width // 2 + 1), 2)[: rows * width].reshape(rows, width).astype(np.int32)
    given = find_runs(tables[2], 1)
    dense_input = jnp.arange(rows, dtype=jnp.float32)

    def body(state, inputs):
        j, seen = state
        (a, b, c), x = inputs
        seen = jax.lax.dynamic_update_index_in_dim(seen, jnp.stack([a, b, c]).reshape(3, width), j, 0)
        return j + x.astype(jnp.int32) - j + 1, seen

    state = (jnp.int32(0), jnp.zeros((rows, 3, width), jnp.int32))
    _, seen = jax.jit(lambda x: _executor.loop(body, state, ((tables[0], tables[1], given), x)))(dense_input)
    np.testing.assert_array_equal(np.asarray(seen), np.stack(tables, axis=1))
    assert isinstance(compact(tables[1]), Runs)


def test_interpreter_tables_as_runs_where_advances_are_long():
    """At small budgets the interpreter's rows are built as a run per action, never expanded: the same rows."""
    schedule = solve(400, 2.0, kind="hsm").schedule()  # two slots: long advances
    tables = compile_tables(schedule)
    assert isinstance(tables.op, Runs) and tables.op.runs <= len(schedule.op)
    patched = _tables.DENSE_ROWS_PER_ACTION
    try:
        _tables.DENSE_ROWS_PER_ACTION = 1 << 40
        dense = compile_tables(schedule)
    finally:
        _tables.DENSE_ROWS_PER_ACTION = patched
    for name in ("op", "start", "offset"):
        np.testing.assert_array_equal(getattr(tables, name).dense(), getattr(dense, name))
    assert tables.rows == dense.rows and tables.conditionals == dense.conditionals
    assert dense.rows > _tables.DENSE_ROWS_PER_ACTION * len(schedule.op)


@pytest.mark.parametrize("length, memory", [(120, 1.0), (400, 2.0)])
def test_gradients_through_run_tables_equal_lax_scan(length, memory):
    params, init, _ = tiny_lstm(0)
    xs = jax.random.normal(KEY, (length, B, NIN))
    step = functools.partial(lstm_step, params)
    carry_bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(init))
    plan = memjax.plan_scan(step, init, xs, memory=int(memory * carry_bytes), kind="hsm")
    assert isinstance(plan.tables.op, Runs)

    def loss(scan, xs):
        carry, ys = scan(step, init, xs)
        return jnp.sum(carry[0]) + jnp.sum(jnp.sin(ys))

    ours = jax.grad(loss, argnums=1)(functools.partial(memjax.scan, memory=plan.budget_bytes, kind="hsm"), xs)
    theirs = jax.grad(loss, argnums=1)(jax.lax.scan, xs)
    assert_trees_close(ours, theirs)
