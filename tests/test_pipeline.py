"""Tests of pipelined schedules (memjax._pipeline): the tables replayed on tags, independently of the executor.

The replay follows the order in which memjax's Pipelined executor runs the tables (the forward sweep's carry
writes, its run of internal states and its checkpoints; then one iteration per forward of the stream, which
writes its forward and then reads its paired backward step, or, unpaired (the lead-in, the chunks' extra
forwards), reads back what it wrote; then the tail) and writes, for every stored item, a tag naming the state
into each quantum it covers. A read checks that every quantum it covers still holds the state it expects, so a
slot reused too early, two items that overlap, a restore from the wrong place or a backward step before its
internal state was recomputed all fail.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from memjax._pipeline import INIT, KEEP, LOAD_HIDDEN, LOAD_INTERNAL, pipeline, pipeline_size
from memjax.planning import solve

_QUANTA = {1.0: (1, 1), 1.5: (2, 3), 2.0: (1, 2), 7 / 3: (3, 7), 4.75: (4, 19)}


def replay(pipe, s: int, i: int) -> int:
    """Run the pipeline's tables on tags; returns the forward evaluations made."""
    t, top = pipe.length, pipe.stack_quanta + s  # the initial carry is kept above the stack
    memory = np.full(top, None, dtype=object)
    forwards = 0

    def write(offset, size, tag):
        assert offset >= 0 and offset + size <= top, f"{tag} written outside the pools"
        assert tag == ("h", 0) or offset + size <= pipe.stack_quanta, f"{tag} written above the stack"
        memory[offset : offset + size] = [tag] * size

    def read(offset, size, tag):
        assert offset >= 0 and offset + size <= top, f"{tag} read outside the pools"
        held = set(memory[offset : offset + size])
        assert held == {tag}, f"expected {tag} at {offset}, found {held}"

    # Forward sweep. A carry written into an internal state's slot is h_{c-1}; the slot is then filled with I_c.
    write(pipe.stack_quanta, s, ("h", 0))
    for k in range(1, pipe.carry_step + 1):
        size = s if pipe.carry_kind[k - 1] == LOAD_HIDDEN else i
        write(int(pipe.carry_offset[k - 1]), size, ("h", k - 1))
    for k, offset in zip(range(pipe.run_start, t), pipe.run_offset):
        write(int(offset), i, ("I", k))
    forwards += t
    for c, offset in zip(pipe.checkpoint_step, pipe.checkpoint_offset):
        read(int(offset), i, ("h", int(c) - 1))
        write(int(offset), i, ("I", int(c)))
        forwards += 1

    def forward(j):
        k, kind, source = int(pipe.forward_step[j]), int(pipe.restore_kind[j]), int(pipe.restore_offset[j])
        if kind in (INIT, LOAD_HIDDEN):
            read(source, s, ("h", k - 1))
        else:  # an internal state holds the carry after its step; KEEP reads the previous forward's
            assert kind in (KEEP, LOAD_INTERNAL)
            read(source, i, ("I", k - 1))
        write(int(pipe.forward_offset[j]), i, ("I", k))

    # Backward sweep: one iteration per forward of the stream, which writes its forward, then reads its backward
    # step if paired; an unpaired one back-propagates its own step from what it has just written, and that step's
    # row of the xs cotangents must be written again later by the step's own backward.
    b, overwritten = 0, set()
    paired = pipe.paired
    assert len(paired) == len(pipe.forward_step) and paired.sum() == pipe.main_forwards
    for j in range(len(pipe.forward_step)):
        forward(j)
        forwards += 1
        if paired[j]:
            read(int(pipe.backward_offset[b]), i, ("I", t - 1 - b))
            overwritten.discard(t - 1 - b)
            b += 1
        else:
            k = int(pipe.forward_step[j])
            assert 1 <= k < t - b, f"an unpaired forward of step {k} after its backward"
            read(int(pipe.forward_offset[j]), i, ("I", k))
            overwritten.add(k)
    while b < t - 1:
        read(int(pipe.backward_offset[b]), i, ("I", t - 1 - b))
        overwritten.discard(t - 1 - b)
        b += 1
    assert not overwritten, f"unpaired forwards' cotangent rows never written again: {sorted(overwritten)}"
    return forwards


def _policies():
    for t in (2, 3, 5, 8, 13, 21, 40, 64, 100, 257):
        for alpha, (_s, _i) in _QUANTA.items():
            for kind in ("msm", "ism", "chen"):
                for fraction in (0.03, 0.1, 0.3, 0.7):
                    memory = 1 + fraction * (t - 1) * alpha
                    try:
                        yield t, kind, alpha, solve(t, memory, alpha=alpha, kind=kind)
                    except ValueError:  # below the least memory of this kind
                        continue


POLICIES = list(_policies())


@pytest.mark.parametrize("t", sorted({t for t, *_ in POLICIES}))
def test_pipelines_replay(t):
    pipelined = 0
    for _, _kind, _alpha, policy in (p for p in POLICIES if p[0] == t):
        schedule = policy.schedule()
        pipe = pipeline(schedule, stack_quanta=1 << 62)
        if pipe is None:
            continue
        pipelined += 1
        assert replay(pipe, schedule.hidden_quanta, schedule.internal_quanta) == pipe.forward_count
        # The pipeline adds at most one forward per checkpoint to the policy's, and no conditional.
        assert policy.cost <= pipe.forward_count <= policy.cost + len(pipe.checkpoint_step)
        assert pipe.conditionals == 0
        assert pipe.lead + sum(pipe.extra) + pipe.main_forwards == len(pipe.forward_step)
    assert pipelined > 0


def test_a_chunk_is_never_left_empty():
    """Chen's policy over 34 steps at alpha 2 within 40 units: at the least lead-in that keeps up, the second
    chunk's extra forward would be the stream's last and leave the chunk without an iteration (found by the
    property test); the lead-in starts one further ahead instead."""
    schedule = solve(34, 40.0, alpha=2.0, kind="chen").schedule()
    pipe = pipeline(schedule, stack_quanta=1 << 62)
    assert replay(pipe, schedule.hidden_quanta, schedule.internal_quanta) == pipe.forward_count
    assert pipe.lead + sum(pipe.extra) + pipe.main_forwards == len(pipe.forward_step)


def test_the_two_forward_family_pipelines():
    """Every schedule whose backward sweep stores no hidden state and runs at most 2t forwards pipelines (Chen's
    always); one that stores hidden states (HSM's) or recomputes more does not."""
    from memjax.planning import Op

    family = {
        Op.ADVANCE,
        Op.RESTORE_HIDDEN,
        Op.RESTORE_INTERNAL,
        Op.SAVE_INTERNAL,
        Op.BACKWARD,
        Op.BACKWARD_STORED,
        Op.FREE,
    }
    for t, kind, _, policy in POLICIES:
        schedule = policy.schedule()
        sweep = slice(schedule.first_backward + 1, None)
        op, steps = schedule.op[sweep], schedule.stop[sweep] - schedule.start[sweep]
        forwards = np.sum(np.where(op == Op.ADVANCE, steps, (op == Op.SAVE_INTERNAL) | (op == Op.BACKWARD)))
        in_family = set(op.tolist()) <= set(family) and forwards <= 2 * t
        assert (pipeline(schedule, stack_quanta=1 << 62) is not None) == in_family, (t, kind, policy)
        assert in_family or kind != "chen"


@pytest.mark.parametrize("t", sorted({t for t, *_ in POLICIES}))
def test_pipeline_size_without_placing(t):
    """pipeline_size counts the stack the placement reaches (pipeline() checks both agree) and the forwards."""
    for _, _kind, _alpha, policy in (p for p in POLICIES if p[0] == t):
        schedule = policy.schedule()
        pipe = pipeline(schedule, stack_quanta=1 << 62)
        size = pipeline_size(schedule)
        assert (size is None) == (pipe is None)
        if pipe is not None:
            assert size == (pipe.stack_quanta, pipe.forward_count)


def test_bounded_stack_is_respected():
    policy = solve(100, 1 + 0.3 * 99 * 2.0, alpha=2.0, kind="msm")
    schedule = policy.schedule()
    pipe = pipeline(schedule, stack_quanta=1 << 62)
    assert pipeline(schedule, stack_quanta=pipe.stack_quanta).stack_quanta == pipe.stack_quanta
    assert pipeline(schedule, stack_quanta=pipe.stack_quanta - 1) is None


def test_pipeline_overshoot_is_a_few_internal_states():
    """The pipeline holds at most a few internal states more than the schedule: one because a backward step
    does not fuse with its forward, one because an iteration writes before it reads, and the extra forwards.
    (Policies of more than two forwards per step, never pipelined by memjax.scan, may hold more.)"""
    for t, kind, alpha, policy in POLICIES:
        if policy.cost > 2 * t:
            continue
        schedule = policy.schedule()
        pipe = pipeline(schedule, stack_quanta=1 << 62)
        if pipe is None:
            continue
        over = pipe.stack_quanta - schedule.stack_quanta
        assert over <= (3 + int(pipe.extra.sum())) * schedule.internal_quanta, (t, kind, alpha, over)


def test_interpreter_schedules_do_not_pipeline():
    """HSM's backward sweep stores hidden states as it goes: not a pipeline's uniform loop."""
    policy = solve(50, 4, kind="hsm")
    assert pipeline(policy.schedule(), stack_quanta=1 << 62) is None


def _packages_after(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` of a fresh interpreter once it has run ``code``."""
    report = "import sys; print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_planning_imports_no_jax():
    """memjax.planning is pure numpy: solving a policy and building its schedule imports neither JAX nor optax."""
    loaded = _packages_after("import memjax.planning; memjax.planning.solve(100, 10).schedule()")
    assert "memjax" in loaded and "numpy" in loaded
    assert not loaded & {"jax", "jaxlib", "optax"}, sorted(loaded & {"jax", "jaxlib", "optax"})


def test_import_memjax_imports_no_jax():
    """``import memjax`` is light: JAX and optax are imported by the first use of a name that needs them."""
    loaded = _packages_after("import memjax; memjax.format_bytes(1 << 20); memjax.clear_caches()")
    assert not loaded & {"jax", "jaxlib", "optax"}, sorted(loaded & {"jax", "jaxlib", "optax"})
    loaded = _packages_after("import memjax; memjax.scan")
    assert "jax" in loaded and "optax" not in loaded  # optax comes with memjax.training alone


def test_public_names_resolve():
    """Every name the namespaces export resolves (the top level's on first use); what moved to a subpackage is
    not on the top level."""
    import memjax
    import memjax.planning
    import memjax.training

    for module in (memjax, memjax.planning, memjax.training):
        assert all(getattr(module, name) is not None for name in module.__all__), module.__name__
    assert set(memjax.__all__) <= set(dir(memjax))
    for name in ("solve", "KINDS", "Schedule", "simulate", "train", "TrainState", "StepCosts"):
        assert not hasattr(memjax, name), name


def test_planning_a_scan_imports_no_jax():
    """What memjax.scan plans with once a step is measured (the plan's module, the pipeline, the interpreter's
    tables) is pure numpy too."""
    code = (
        "import memjax, memjax._plan\n"
        "from memjax._pipeline import pipeline\n"
        "from memjax._tables import compile_tables\n"
        "schedule = memjax.planning.solve(100, 30, alpha=2.0).schedule()\n"
        "pipeline(schedule, stack_quanta=1 << 62), compile_tables(schedule), memjax.SCAN_KINDS, memjax.ScanPlan"
    )
    loaded = _packages_after(code)
    assert not loaded & {"jax", "jaxlib", "optax"}, sorted(loaded & {"jax", "jaxlib", "optax"})
