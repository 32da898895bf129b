"""Tests of flat schedules (memjax._schedule) and of the schedules that policies emit.

Every emitted schedule is checked twice: by memjax.planning.simulate (with the policy's budget) and by an independent
value-level executor written here, which runs a toy recurrence on integers and checks that each backward step
receives the true state, with nothing but the action table and the stored values to go by.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memjax import _solver
from memjax._emit import emit_schedule
from memjax.planning import KINDS, Op, Schedule, ScheduleError, hsm_cost, min_memory, simulate, solve

GRID_ALPHAS = (1.0, 1.5, 2.0, 2.5, 3.0, 7 / 3)
RANDOM_ALPHAS = (0.5, 1.0, 1.1, 1.5, 2.0, 2.5, 7 / 3, 3.0, 4.75, 10.0)

# ------------------------------------------------------------------------------------------------------------------
# An independent executor
# ------------------------------------------------------------------------------------------------------------------

_MODULUS = (1 << 61) - 1


def _step(value: int, k: int) -> int:
    """Toy recurrent step k: h_k = f(h_{k-1}, x_k), with x_k = k."""
    return (value * 6364136223846793005 + 1442695040888963407 * k + 12345) % _MODULUS


def _truth(t: int, h0: int = 987654321) -> list[int]:
    states = [h0]
    for k in range(1, t + 1):
        states.append(_step(states[-1], k))
    return states


def execute(schedule: Schedule, budget_quanta: int | None = None) -> tuple[int, int]:
    """Run ``schedule`` on the toy recurrence; return (forward evaluations, peak quanta held, h_0 included).

    Unlike ``simulate``, this tracks values, not positions: a restore from the wrong slot, a stale register or a
    mis-numbered step shows up as a wrong value. Positions named by an action are checked against the true
    state (e.g. ``ADVANCE a -> b`` needs the register to hold the true ``h_a``).
    """
    t, s, i = schedule.length, schedule.hidden_quanta, schedule.internal_quanta
    truth = _truth(t)
    register = truth[0]
    slots: dict[int, tuple] = {}  # offset -> (size, kind, payload)
    held = peak = s
    forwards = 0
    pending = t

    def fail(index, message):
        raise AssertionError(f"action {index}: {message}")

    def claim(index, value, position):
        if value is None or value != truth[position]:
            fail(index, f"expects h_{position}, holds {'nothing' if value is None else 'another state'}")

    def store(index, offset, size, item):
        nonlocal held, peak
        if offset < 0 or offset + size > schedule.stack_quanta:
            fail(index, f"store at {offset}..{offset + size} outside the stack of {schedule.stack_quanta}")
        for other, (other_size, *_) in slots.items():
            if offset < other + other_size and other < offset + size:
                fail(index, f"store at {offset} overlaps {other}")
        slots[offset] = (size, *item)
        held += size
        peak = max(peak, held)
        if budget_quanta is not None and held > budget_quanta:
            fail(index, f"{held} quanta held, budget {budget_quanta}")

    for index, (op, a, b, off) in enumerate(
        zip(schedule.op.tolist(), schedule.start.tolist(), schedule.stop.tolist(), schedule.offset.tolist())
    ):
        if op == Op.ADVANCE:
            claim(index, register, a)
            for k in range(a + 1, b + 1):
                register = _step(register, k)
            forwards += b - a
        elif op == Op.SAVE_HIDDEN:
            claim(index, register, a)
            store(index, off, s, ("h", register))
        elif op == Op.SAVE_INTERNAL:
            claim(index, register, a)
            output = _step(register, a + 1)
            forwards += 1
            store(index, off, i, ("I", a + 1, register, output))  # residuals of step a+1: its input and output
            register = output
        elif op == Op.RESTORE_HIDDEN:
            if off == -1:
                register = truth[0]
            else:
                if off not in slots or slots[off][1] != "h":
                    fail(index, f"no hidden state at {off}")
                register = slots[off][2]
            claim(index, register, a)
        elif op == Op.RESTORE_INTERNAL:
            if off not in slots or slots[off][1] != "I":
                fail(index, f"no internal state at {off}")
            register = slots[off][4]
            claim(index, register, a)
        elif op == Op.BACKWARD:
            k = a + 1
            if k != pending:
                fail(index, f"back-propagates step {k}, expected {pending}")
            if register != truth[k - 1]:
                fail(index, f"step {k} fed with a wrong state")
            forwards += 1
            pending -= 1
            register = None
        elif op == Op.BACKWARD_STORED:
            if off not in slots or slots[off][1] != "I":
                fail(index, f"no internal state at {off}")
            _, _, step, inputs, output = slots[off]
            if a != pending or step != pending or inputs != truth[step - 1] or output != truth[step]:
                fail(index, f"residuals of step {step} used for step {pending}, or wrong")
            pending -= 1
        elif op == Op.FREE:
            if off not in slots or slots[off][0] != b:
                fail(index, f"free of {b} quanta at {off}")
            held -= slots.pop(off)[0]
        else:
            fail(index, f"unknown op {op}")
    if pending:
        raise AssertionError(f"steps 1..{pending} never back-propagated")
    return forwards, peak


def check_policy(policy) -> None:
    """All invariants of an emitted schedule."""
    schedule = policy.schedule()
    result = simulate(schedule, budget_quanta=policy.budget_quanta)
    assert result == schedule._summary  # the emitter's counts (numpy) are the simulation's
    # Runs written at once (numpy) are the actions the recursion writes one by one.
    one_by_one = _solver._emit(policy, runs=False)
    for column in ("op", "start", "stop", "offset"):
        np.testing.assert_array_equal(getattr(schedule, column), getattr(one_by_one, column), err_msg=column)
    assert result.forward_count == schedule.forward_count == policy.cost
    assert schedule.peak_memory == result.peak_quanta / schedule.hidden_quanta
    assert policy.peak_memory <= policy.memory + 1e-12
    assert result.peak_quanta <= policy.budget_quanta
    forwards, peak = execute(schedule, policy.budget_quanta)
    assert forwards == policy.cost
    assert peak == result.peak_quanta
    t = policy.length
    ops = schedule.op
    assert np.count_nonzero((ops == Op.BACKWARD) | (ops == Op.BACKWARD_STORED)) == t
    # the first forward sweep reaches h_{t-1} and recomputes nothing
    before = slice(0, schedule.first_backward)
    sweep = np.where(ops[before] == Op.ADVANCE, schedule.stop[before] - schedule.start[before], 0).sum()
    sweep += np.count_nonzero(ops[before] == Op.SAVE_INTERNAL)
    assert sweep == t - 1
    # the executor's contract: the first sweep only advances and stores, and ends with BACKWARD of step t
    assert set(ops[before].tolist()) <= {Op.ADVANCE, Op.SAVE_HIDDEN, Op.SAVE_INTERNAL}
    assert ops[schedule.first_backward] == Op.BACKWARD and schedule.start[schedule.first_backward] == t - 1
    # peephole: no state is stored only to be freed at once
    stored_then_freed = (
        (ops[:-1] == Op.SAVE_HIDDEN) & (ops[1:] == Op.FREE) & (schedule.offset[:-1] == schedule.offset[1:])
    )
    assert not np.any(stored_then_freed)
    if policy.kind in ("hsm", "recompute"):
        assert schedule.internal_slots == 0 and not np.any(ops == Op.SAVE_INTERNAL)
    if policy.kind == "ism":
        assert schedule.hidden_slots == 0 and not np.any(ops == Op.SAVE_HIDDEN)
    if policy.kind == "recompute":
        assert schedule.hidden_slots == 0 and schedule.peak_memory == 1
    if policy.kind == "store_all":
        assert schedule.internal_slots == t - 1 and schedule.hidden_slots == 0
    if policy.kind == "hsm":
        assert schedule.hidden_slots <= max(policy.budget_quanta - 1, 0)


# ------------------------------------------------------------------------------------------------------------------
# Emitted schedules
# ------------------------------------------------------------------------------------------------------------------


def _quanta(alpha):
    policy = solve(1, 1.0, alpha=alpha)
    return policy.hidden_quanta, policy.internal_quanta


def _grid_policies(ts, alphas):
    for alpha in alphas:
        s, i = _quanta(alpha)
        for t in ts:
            full = s + (t - 1) * i
            for kind in KINDS:
                if kind in ("hsm", "recompute"):
                    budgets = [m for m in range(1, t + 2)] + [1.5, t + 0.5]
                else:
                    least = round(min_memory(t, alpha=alpha, kind=kind) * s)
                    budgets = [q / s for q in range(least, full + 2)]
                for memory in budgets:
                    yield solve(t, memory, alpha=alpha, kind=kind)


@pytest.mark.parametrize("t", list(range(1, 9)))
def test_schedules_of_the_exhaustive_grid(t):
    count = 0
    for policy in _grid_policies([t], GRID_ALPHAS):
        check_policy(policy)
        count += 1
    assert count >= len(KINDS) * len(GRID_ALPHAS)


def test_spent_checkpoints_in_emitted_schedules():
    """A hidden checkpoint loaded for the last time is freed and its memory reused for an internal state (FREE then
    SAVE_INTERNAL at the same offset); the schedule stays valid under the policy's budget."""
    spent = 0
    for t, memory, alpha in [(7, 4.0, 3.0), (10, 3.0, 2.0), (40, 6.0, 2.5), (100, 9.0, 7 / 3), (300, 20.0, 3.0)]:
        policy = solve(t, memory, alpha=alpha)
        check_policy(policy)
        schedule = policy.schedule()
        ops, offsets = schedule.op, schedule.offset
        hits = (ops[:-1] == Op.FREE) & (ops[1:] == Op.SAVE_INTERNAL) & (offsets[:-1] == offsets[1:])
        sizes = schedule.stop[:-1][hits]
        assert np.all(sizes == schedule.hidden_quanta)  # what is freed there is a hidden checkpoint
        spent += int(np.count_nonzero(hits))
    assert spent >= 5


@pytest.mark.parametrize("t", [13, 34, 60])
def test_schedules_of_a_medium_grid(t):
    for alpha in (2.0, 7 / 3):
        s, i = _quanta(alpha)
        full = s + (t - 1) * i
        for kind in KINDS:
            least = round(min_memory(t, alpha=alpha, kind=kind) * s) if kind not in ("hsm", "recompute") else s
            for q in sorted(set(np.linspace(least, full + 1, 12).astype(int).tolist())):
                check_policy(solve(t, q / s, alpha=alpha, kind=kind))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=st.integers(1, 60), kind=st.sampled_from(KINDS), alpha=st.sampled_from(RANDOM_ALPHAS), fraction=st.floats(0, 1.1)
)
def test_random_schedules(t, kind, alpha, fraction):
    s, i = _quanta(alpha)
    full = s + (t - 1) * i
    least = round(min_memory(t, alpha=alpha, kind=kind) * s)
    q = least + int(fraction * (full - least))
    policy = solve(t, q / s, alpha=alpha, kind=kind)
    check_policy(policy)


@pytest.mark.parametrize("t", [50, 333, 3001])
@pytest.mark.parametrize("s", [1, 3])
def test_binomial_blocks_and_chains_are_the_recursions_actions(t, s):
    """Binomial policies write each (length, budget) sub-problem once and copy it, shifted, where it recurs, and
    long chains of splits at 1 at once: the same actions as the recursion writes one by one, at lengths where
    sub-problems recur many times and at budgets where most of the sequence is such a chain (HSM, and MSM's
    binomial policy on hidden states of ``s`` quanta)."""
    for slots in (2, 3, 5, 8, 13, 40, 200, 2000):
        q = slots * s + s // 2
        decide = functools.partial(_solver._binomial_decide, s)
        schedule = emit_schedule(t, s, 7 * s, q, decide, binomial=True)
        one_by_one = emit_schedule(t, s, 7 * s, q, decide, binomial=True, runs=False)
        for column in ("op", "start", "stop", "offset"):
            np.testing.assert_array_equal(getattr(schedule, column), getattr(one_by_one, column), err_msg=column)
        assert simulate(schedule, budget_quanta=q).forward_count == hsm_cost(t, slots)


@pytest.mark.parametrize("t", [50, 333, 3001])
@pytest.mark.parametrize("kind, alpha", [("ism", 7.5), ("ism", 1.0), ("msm", 0.5)])
def test_ism_blocks_are_the_recursions_actions(t, kind, alpha):
    """ISM's policy and the two-forward policy (also MSM's, where an internal state is smaller than a hidden one)
    decide by length and budget alone: their sub-problems are copied where they recur, with the same actions as
    the recursion's."""
    for slots in (1, 2, 3, 5, 10, 40):
        policy = solve(t, 1 + slots * max(alpha, 1.0), alpha=alpha, kind=kind)
        assert policy._by_length
        schedule, one_by_one = policy.schedule(), _solver._emit(policy, runs=False)
        for column in ("op", "start", "stop", "offset"):
            np.testing.assert_array_equal(getattr(schedule, column), getattr(one_by_one, column), err_msg=column)
        assert simulate(schedule, budget_quanta=policy.budget_quanta).forward_count == policy.cost


@pytest.mark.slow
@pytest.mark.parametrize("t", [100, 257, 1000])
@pytest.mark.parametrize("kind", ["msm", "hsm", "ism", "chen"])
def test_long_schedules(t, kind):
    for alpha in (2.0, 10.0):
        s, i = _quanta(alpha)
        least = round(min_memory(t, alpha=alpha, kind=kind) * s)
        for q in (least, least + 1, 3 * least + 7, 40 * s, 2 * t * s):
            if q >= least:
                check_policy(solve(t, q / s, alpha=alpha, kind=kind))


# ------------------------------------------------------------------------------------------------------------------
# Hand-made schedules
# ------------------------------------------------------------------------------------------------------------------

# t=4, h = 1 quantum, I = 2 quanta: 6 forwards, peak 1 + 1 + 2 = 4 quanta
_BASE = [
    (Op.ADVANCE, 0, 1, -1),  # 0  h_1
    (Op.SAVE_HIDDEN, 1, 1, 0),  # 1  h_1 @ 0
    (Op.ADVANCE, 1, 2, -1),  # 2  h_2
    (Op.SAVE_INTERNAL, 2, 3, 1),  # 3  I_3 @ 1..2, register h_3
    (Op.BACKWARD, 3, 4, -1),  # 4  step 4 from the register
    (Op.BACKWARD_STORED, 3, 3, 1),  # 5  step 3 from I_3
    (Op.FREE, 0, 2, 1),  # 6
    (Op.RESTORE_HIDDEN, 1, 1, 0),  # 7  h_1
    (Op.BACKWARD, 1, 2, -1),  # 8  step 2
    (Op.FREE, 0, 1, 0),  # 9
    (Op.RESTORE_HIDDEN, 0, 0, -1),  # 10 h_0
    (Op.BACKWARD, 0, 1, -1),  # 11 step 1
]


def _columns(rows):
    op, start, stop, offset = (np.array(column, dtype=np.int64) for column in zip(*rows))
    return op, start, stop, offset


def _build(rows, t=4, s=1, i=2):
    return Schedule(t, *_columns(rows), s, i)


def _build_unchecked(rows, t=4, s=1, i=2):
    """A Schedule whose construction-time simulation is bypassed, to feed the executor broken tables."""
    schedule = object.__new__(Schedule)
    op, start, stop, offset = _columns(rows)
    for name, value in (
        ("length", t),
        ("op", op),
        ("start", start),
        ("stop", stop),
        ("offset", offset),
        ("hidden_quanta", s),
        ("internal_quanta", i),
    ):
        object.__setattr__(schedule, name, value)
    object.__setattr__(schedule, "_summary", simulate(_build(_BASE)))
    return schedule


def test_base_schedule_is_valid():
    schedule = _build(_BASE)
    result = simulate(schedule, budget_quanta=4)
    assert (result.forward_count, result.peak_quanta, result.hidden_slots, result.internal_slots) == (6, 4, 1, 1)
    assert schedule.forward_count == 6 and schedule.peak_memory == 4 and schedule.stack_quanta == 3
    assert schedule.hidden_slots == 1 and schedule.internal_slots == 1
    assert len(schedule) == len(_BASE) and schedule.first_backward == 4
    assert execute(schedule, 4) == (6, 4)
    assert not schedule.op.flags.writeable  # the table is frozen


def test_over_budget_raises():
    schedule = _build(_BASE)
    with pytest.raises(ScheduleError, match="budget"):
        simulate(schedule, budget_quanta=3)
    # units are quanta: with 2 quanta per hidden state (and 2 per internal state, alpha = 1) the same program
    # holds 2 + 2 + 2 = 6 quanta, i.e. 3 units
    wide_rows = list(_BASE)
    wide_rows[3] = (Op.SAVE_INTERNAL, 2, 3, 2)
    wide_rows[5] = (Op.BACKWARD_STORED, 3, 3, 2)
    wide_rows[6] = (Op.FREE, 0, 2, 2)
    wide_rows[9] = (Op.FREE, 0, 2, 0)
    wide = _build(wide_rows, s=2, i=2)
    assert simulate(wide, budget_quanta=6).peak_quanta == 6
    assert wide.peak_memory == 3 and wide.stack_quanta == 4
    with pytest.raises(ScheduleError, match="budget"):
        simulate(wide, budget_quanta=5)
    with pytest.raises(ScheduleError):  # and its frees must name the right sizes
        _build(wide_rows, s=1, i=2)


def _replace(rows, index, row):
    rows = list(rows)
    rows[index] = row
    return rows


def _delete(rows, index):
    return rows[:index] + rows[index + 1 :]


def _swap(rows, a, b):
    rows = list(rows)
    rows[a], rows[b] = rows[b], rows[a]
    return rows


BROKEN = {  # name: (rows, the first action that simulate must reject, or None for an unfinished schedule)
    "backward out of order": (_swap(_BASE, 4, 5), 4),
    "backward step skipped": (_replace(_BASE, 8, (Op.BACKWARD, 0, 1, -1)), 8),
    "restore from an empty slot": (_replace(_BASE, 7, (Op.RESTORE_HIDDEN, 1, 1, 5)), 7),
    "restore the wrong position": (_replace(_BASE, 7, (Op.RESTORE_HIDDEN, 2, 2, 0)), 7),
    "restore after free": (_BASE[:7] + [_BASE[9], _BASE[7], _BASE[8]] + _BASE[10:], 8),
    "restore h_k from the initial state": (_replace(_BASE, 7, (Op.RESTORE_HIDDEN, 1, 1, -1)), 7),
    "restore internal from a hidden slot": (_replace(_BASE, 7, (Op.RESTORE_INTERNAL, 1, 1, 0)), 7),
    "step never back-propagated": (_BASE[:-1], None),
    "backward from an empty register": (_delete(_BASE, 7), 7),
    "backward from the wrong position": (_replace(_BASE, 7, (Op.RESTORE_HIDDEN, 0, 0, -1)), 8),
    "advance past the next backward step": (_replace(_BASE, 2, (Op.ADVANCE, 1, 4, -1)), 2),
    "advance from the wrong position": (_replace(_BASE, 2, (Op.ADVANCE, 0, 2, -1)), 2),
    "overlapping stores": (_replace(_BASE, 3, (Op.SAVE_INTERNAL, 2, 3, 0)), 3),
    "free of the wrong size": (_replace(_BASE, 6, (Op.FREE, 0, 1, 1)), 6),
    "free of an empty slot": (_replace(_BASE, 9, (Op.FREE, 0, 1, 3)), 9),
    "double free": (_BASE[:7] + [(Op.FREE, 0, 2, 1)] + _BASE[7:], 7),
    "negative offset": (_replace(_BASE, 1, (Op.SAVE_HIDDEN, 1, 1, -2)), 1),
    "save away from the register": (_replace(_BASE, 1, (Op.SAVE_HIDDEN, 2, 2, 0)), 1),
    "save an internal state at the next backward step": (
        _BASE[:2] + [(Op.ADVANCE, 1, 3, -1), (Op.SAVE_INTERNAL, 3, 4, 1)] + _BASE[4:],
        3,
    ),
    "backward from a hidden slot": (_replace(_BASE, 5, (Op.BACKWARD_STORED, 3, 3, 0)), 5),
    "backward stored for the wrong step": (_replace(_BASE, 5, (Op.BACKWARD_STORED, 2, 2, 1)), 5),
    "extra backward": (_BASE + [(Op.BACKWARD, 0, 1, -1)], 12),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_schedules_raise(name):
    rows, action = BROKEN[name]
    assert rows != _BASE
    match = "not back-propagated" if action is None else rf"^action {action} \("
    with pytest.raises(ScheduleError, match=match):
        _build(rows)  # construction simulates
    with pytest.raises(AssertionError):  # and the independent executor agrees that it is broken
        execute(_build_unchecked(rows))


def test_error_names_the_action():
    with pytest.raises(ScheduleError, match=r"action 7 \(RESTORE_HIDDEN\)"):
        _build(BROKEN["restore from an empty slot"][0])
    with pytest.raises(ScheduleError, match=r"1\.\.1"):
        _build(BROKEN["step never back-propagated"][0])


@pytest.mark.parametrize("code", [9, -1])
def test_unknown_op_code_raises_schedule_error(code):
    with pytest.raises(ScheduleError, match=rf"^action 2 \(code {code}\): unknown action code"):
        _build(_replace(_BASE, 2, (code, 1, 2, -1)))


def test_empty_schedule_for_positive_length_raises():
    with pytest.raises(ScheduleError):
        _build([(Op.ADVANCE, 0, 0, -1)], t=2)


# ------------------------------------------------------------------------------------------------------------------
# describe() and plot()
# ------------------------------------------------------------------------------------------------------------------


def _all_ops_policy():
    policy = solve(20, 8.0, alpha=2.0)
    assert set(policy.schedule().op.tolist()) == set(map(int, Op)), "expected a schedule using every action"
    return policy


_KEYWORDS = {
    Op.ADVANCE: "advance",
    Op.SAVE_HIDDEN: "save h_",
    Op.SAVE_INTERNAL: "save I_",
    Op.RESTORE_HIDDEN: "restore h_",
    Op.RESTORE_INTERNAL: "from I_",
    Op.BACKWARD: "backward step",
    Op.BACKWARD_STORED: "backward step",
    Op.FREE: "free",
}


def test_describe_mentions_each_action():
    schedule = _all_ops_policy().schedule()
    text = schedule.describe(max_actions=len(schedule) + 1)
    lines = text.splitlines()
    assert len(lines) == len(schedule) + 1
    assert f"{schedule.forward_count} forward evaluations" in lines[0]
    for index, (op, a, b) in enumerate(zip(schedule.op.tolist(), schedule.start.tolist(), schedule.stop.tolist())):
        line = lines[index + 1]
        assert line.split()[0] == str(index)
        assert _KEYWORDS[Op(op)] in line, line
        if op == Op.ADVANCE:
            assert f"h_{a} -> h_{b}" in line
        elif op == Op.BACKWARD:
            assert f"step {a + 1}" in line
        elif op == Op.BACKWARD_STORED:
            assert f"step {a}" in line and f"I_{a}" in line


def test_describe_of_base_schedule_and_truncation():
    schedule = _build(_BASE)
    text = schedule.describe()
    for needle in (
        "advance     h_0 -> h_1",
        "save h_1",
        "save I_3",
        "backward step 4",
        "backward step 3 from I_3",
        "free @ 1 (2 quanta)",
        "restore h_1 from @ 0",
        "restore h_0 from init",
        "backward step 1",
    ):
        assert needle in text, needle
    short = schedule.describe(max_actions=5).splitlines()
    assert len(short) == 1 + 5 + 1 and short[-1] == f"... {len(_BASE) - 5} more actions"


def test_plot_runs():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedule = _all_ops_policy().schedule()
    ax = schedule.plot()
    try:
        assert len(ax.lines) > 0
        assert str(schedule.forward_count) in ax.get_title()
        assert ax.get_xlabel() == "forward evaluations"
    finally:
        plt.close(ax.figure)
    fig, ax = plt.subplots()
    try:
        assert schedule.plot(ax=ax) is ax
    finally:
        plt.close(fig)
