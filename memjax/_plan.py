"""Planning a scan: from a step's measured sizes and a budget to a policy and its schedule.

Budget semantics:

* ``memory=None``: the least memory whose schedule makes at most two forward evaluations per step.
* A relative budget (a fraction such as ``0.2`` or a percentage such as ``"5%"`` of what standard BPTT stores)
  is a target: where it falls below the least memory the policy can run with, the plan uses that least memory
  and says so (``ScanPlan.raised_to_least``; :func:`memjax.explain` prints it). A model written with
  ``memory="5%"`` thus runs on every sequence length, its shortest batches included.
* A budget in bytes is a limit: below the least memory it raises, naming the least in bytes.
* Lengths 0 and 1 store nothing but the carry (there is nothing to recompute); every budget and kind accepts
  them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from memjax._budget import Budget, format_bytes
from memjax._pipeline import Pipeline, pipeline, pipeline_size
from memjax._schedule import Schedule
from memjax._solver import KINDS, Policy, _quantize, min_memory, solve, two_forward_policy
from memjax._tables import MAX_ROWS, Tables, compile_tables

if TYPE_CHECKING:  # planning takes measured sizes as plain numbers and shapes; it imports no JAX
    from memjax._measure import StepSizes

__all__ = [
    "ScanPlan",
    "SCAN_KINDS",
    "EXECUTORS",
    "plan",
    "check_executor",
    "pool_quanta",
    "prefers_pipeline",
]

SCAN_KINDS = KINDS + ("auto",)
EXECUTORS = ("auto", "pipelined", "interpreter")

# On a CPU a conditional is cheap while the pipeline reads and writes a carry more per step: above this carry
# the interpreter is the faster there from about 3,000 steps on (the paper's LSTM, a carry of 128 KiB: 4% faster
# pipelined at 1,000 steps, 10% slower at 3,000 and 8% at 10,000; benchmarks/results/lstm_T10000_executor.md).
# A small carry gains the most from the pipeline (30x for a nearly free step: dispatch_T10000.md). On an
# accelerator every conditional is a dispatch, and the pipeline is always preferred.
CPU_PIPELINE_MAX_CARRY_BYTES = 8 * 1024


def prefers_pipeline(sizes: StepSizes, platform: str) -> bool:
    """``executor="auto"``: whether to pipeline a step of these sizes on ``platform`` (``jax.default_backend()``)."""
    return platform != "cpu" or sizes.carry_bytes <= CPU_PIPELINE_MAX_CARRY_BYTES


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """Everything decided before running: sizes, the budget in bytes and units, the policy and its schedule.

    Attributes:
      length: number of steps.
      kind: the policy kind planned (``kind="auto"`` resolves to one of :data:`memjax.planning.KINDS`).
      sizes: measured sizes of one step (:class:`memjax._measure.StepSizes`).
      budget_bytes: the budget for stored states, the initial carry included.
      policy: the solved :class:`~memjax.planning.Policy` (``None`` where nothing is recomputed: ``store_all``, and
        lengths 0 and 1; the scan then runs ``jax.lax.scan``).
      quantum_bytes: bytes of one quantum of the schedule's stack, as the pools lay it out.
      least_bytes: the least budget this kind can run with for this step and length (from about 65,000 steps on,
        the least whose schedule the interpreter's int32 row counter can run: storing nothing at 10^5 steps would
        take 5 * 10^9 forwards).
      raised_to_least: a relative budget fell below ``least_bytes`` and was raised to it.
      pipeline: the schedule re-timed into loops of uniform bodies (:mod:`memjax._pipeline`), or ``None``: the
        schedule then runs one action per row.
      predictions: with ``kind="auto"``, ``(kind, forward evaluations, predicted seconds)`` of each candidate
        (:mod:`memjax._cost`); the plan is the fastest.
    """

    length: int
    kind: str
    sizes: StepSizes
    budget_bytes: int
    policy: Policy | None
    quantum_bytes: int
    least_bytes: int = 0
    raised_to_least: bool = False
    pipeline: Pipeline | None = dataclasses.field(default=None, repr=False)
    predictions: tuple = ()

    @property
    def store_all_bytes(self) -> int:
        """What standard BPTT stores: the initial carry and the internal state of every step but the last."""
        return self.sizes.carry_bytes + max(self.length - 1, 0) * self.sizes.internal_bytes

    @property
    def stored_bytes(self) -> int:
        """Bytes the schedule stores at its peak as executed, the initial carry included."""
        if self.policy is None:
            return self.store_all_bytes
        stack = self.schedule.stack_quanta if self.pipeline is None else self.pipeline.stack_quanta
        return self.sizes.carry_bytes + stack * self.quantum_bytes

    @property
    def schedule(self) -> Schedule | None:
        return None if self.policy is None else self.policy.schedule()

    @property
    def forward_count(self) -> int:
        """Forward step evaluations per gradient as executed (the pipeline may add a few to the policy's)."""
        if self.policy is None:
            return self.length
        return self.policy.cost if self.pipeline is None else self.pipeline.forward_count

    @functools.cached_property
    def tables(self) -> Tables | None:
        """The schedule as the interpreter's tables (``None`` where a pipeline or ``lax.scan`` runs it)."""
        return compile_tables(self.schedule) if self.policy is not None and self.pipeline is None else None

    @property
    def conditionals(self) -> int:
        """Conditionals the gradient evaluates (no loop of the executor has a dynamic trip count): one per chunk
        of a pipeline's main loop, or seven per row of the interpreter and two per step of its forward sweep."""
        if self.policy is None:
            return 0
        return self.pipeline.conditionals if self.pipeline is not None else self.tables.conditionals

    @property
    def executor(self) -> str:
        """How the backward sweep runs: ``"lax.scan"``, ``"pipelined"`` or ``"interpreter"``."""
        return "lax.scan" if self.policy is None else "interpreter" if self.pipeline is None else "pipelined"


def pool_quanta(carry_avals, residual_avals, hidden_quanta: int, internal_quanta: int | None):
    """The pools' dtypes and, per dtype, the elements of one quantum: enough that a hidden state's leaves of that
    dtype fit in ``hidden_quanta`` quanta and an internal state's (the residuals and the carry) in
    ``internal_quanta`` (``None``: internal states are never stored). Avals need ``shape`` and ``dtype`` only.

    Returns:
      ``(dtypes, per_quantum)``, two tuples, the dtypes sorted by name.
    """
    dtypes = tuple(sorted({np.dtype(a.dtype) for a in (*carry_avals, *residual_avals)}, key=str))
    per_quantum = []
    for dtype in dtypes:
        hidden = sum(_size(a) for a in carry_avals if np.dtype(a.dtype) == dtype)
        internal = hidden + sum(_size(a) for a in residual_avals if np.dtype(a.dtype) == dtype)
        need = math.ceil(hidden / hidden_quanta)
        if internal_quanta is not None:
            need = max(need, math.ceil(internal / internal_quanta))
        per_quantum.append(need)
    return dtypes, tuple(per_quantum)


def _size(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64))


def check_executor(executor) -> None:
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not an executor; use one of {', '.join(map(repr, EXECUTORS))}.")


def plan(length: int, kind: str, sizes: StepSizes, budget: Budget | None, pipelined: bool = True) -> ScanPlan:
    """The plan of ``kind`` for ``length`` steps of a step of these ``sizes`` within ``budget``; with
    ``pipelined``, its schedule pipelined where one fits (:mod:`memjax._pipeline`).

    Raises:
      ValueError: for a budget in bytes below the least that ``kind`` can run with (the message names it).
    """
    unit = max(sizes.carry_bytes, 1)
    alpha = sizes.internal_bytes / unit
    store_all = unit + max(length - 1, 0) * sizes.internal_bytes
    if length <= 1 or kind == "store_all":  # nothing to recompute: every state is stored
        budget_bytes, raised = (
            (store_all, False) if budget is None else _fit(budget, store_all, store_all, kind, length, sizes)
        )
        return ScanPlan(length, kind, sizes, budget_bytes, None, unit, store_all, raised)
    s, i = (1, None) if kind in ("hsm", "recompute") else _quantize(alpha)
    # One quantum in bytes, as the pools lay states out (at least carry / s and internal / i).
    dtypes, per_quantum = pool_quanta(sizes.carry_avals, sizes.variant_avals, s, i)
    quantum = max(int(sum(n * d.itemsize for n, d in zip(per_quantum, dtypes))), 1)
    rows = MAX_ROWS - 4 * length  # what the interpreter can run (its rows: forwards plus a few per step)
    runnable = rows if kind != "recompute" and length * (length + 1) // 2 > rows else None  # from ~65,000 steps
    least = round(min_memory(length, runnable, alpha=alpha, kind=kind) * s) * quantum
    if budget is None:  # about the least memory for at most one extra forward pass, planned without a table
        if kind == "recompute":
            policy = _solve(length, s * quantum, quantum, s, alpha, kind)
        else:
            policy = two_forward_policy(length, alpha=alpha, kind=kind)
        budget_bytes, pipe = policy.budget_quanta * quantum, None
        if pipelined and kind not in ("hsm", "recompute"):
            pipe, budget_bytes = _pipelined_default(policy, budget_bytes, quantum)
        return ScanPlan(length, kind, sizes, budget_bytes, policy, quantum, least, False, pipe)
    budget_bytes, raised = _fit(budget, least, store_all, kind, length, sizes)
    if kind in ("hsm", "recompute") or not pipelined:
        policy, pipe = _solve(length, budget_bytes, quantum, s, alpha, kind), None
    else:
        policy, pipe = _pipelined_within(length, budget_bytes, quantum, s, alpha, kind)
    return ScanPlan(length, kind, sizes, budget_bytes, policy, quantum, least, raised, pipe)


# A pipeline may replace the policy's by one solved for less memory (so that the pipeline fits the budget) if it
# makes at most this many more forwards; below that, the policy runs one action per row.
_PIPELINE_EXTRA_FORWARDS = 0.02
_PIPELINE_TRIES = 8


def _solve(length, budget_bytes, quantum, s, alpha, kind) -> Policy:
    # In hidden-state units of s quanta each, so the solver's floor(units * s) is exactly budget // quantum.
    return solve(length, (budget_bytes // quantum) / s, alpha=alpha, kind=kind)


def _pipelined_within(length, budget_bytes, quantum, s, alpha, kind):
    """The policy for the budget, and its pipeline if one fits the budget: the policy's own, or, if that one
    is too large, the pipeline of a policy solved for less memory that makes at most 2% more forwards."""
    policy = _solve(length, budget_bytes, quantum, s, alpha, kind)
    stack = policy.budget_quanta - policy.hidden_quanta  # the stack the budget allows
    internal_quanta = policy.internal_quanta
    candidate, cut = policy, 0
    for _ in range(_PIPELINE_TRIES):
        size = pipeline_size(candidate.schedule())
        if size is None or size[1] > policy.cost * (1 + _PIPELINE_EXTRA_FORWARDS):
            break
        if size[0] <= stack:
            return candidate, pipeline(candidate.schedule(), stack_quanta=stack)
        # Ask for less memory by what the pipeline overshoots, and by at least one internal state: the
        # pipeline's stack falls in steps of internal states.
        cut += max(size[0] - stack, internal_quanta)
        try:
            candidate = _solve(length, budget_bytes - cut * quantum, quantum, s, alpha, kind)
        except ValueError:  # below the least memory
            break
    return policy, None


def _pipelined_default(policy: Policy, budget_bytes: int, quantum: int):
    """``memory=None``: the pipeline of the default budget's policy, and the budget plus what the pipeline holds
    beyond the policy's own peak (a few internal states: see :mod:`memjax._pipeline`); no pipeline, and the budget
    as it is, where the schedule does not pipeline within two forwards per step."""
    size = pipeline_size(policy.schedule())
    if size is None or size[1] > 2 * policy.length:
        return None, budget_bytes
    stack = policy.budget_quanta - policy.hidden_quanta
    return pipeline(policy.schedule(), stack_quanta=size[0]), budget_bytes + max(size[0] - stack, 0) * quantum


def _fit(budget: Budget, least: int, store_all: int, kind: str, length: int, sizes: StepSizes) -> tuple[int, bool]:
    """The budget in bytes, and whether a relative budget was raised to the least."""
    budget_bytes = budget.resolve(store_all)
    if budget_bytes >= least:
        return budget_bytes, False
    if budget.kind == "fraction":  # a target: run with the least memory instead
        return least, True
    advice = (
        " or a relative budget such as memory='5%', which is raised to the least where it falls below it"
        if kind != "store_all"
        else ""
    )
    raise ValueError(
        f"memory={format_bytes(budget_bytes)} ({budget_bytes} bytes) is below the least that kind={kind!r} needs "
        f"for this step over length={length}: {least} bytes ({format_bytes(least)}; the carry is "
        f"{sizes.carry_bytes} bytes, an internal state {sizes.internal_bytes} bytes). Pass memory>={least}"
        f"{advice}."
    )
