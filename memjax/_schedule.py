"""Flat, static recomputation schedules and their symbolic simulator (pure numpy, no JAX).

A :class:`Schedule` is the flattened form of a policy's recursion (Gruslys et al. 2016, section 3; the
``BP`` procedure of ``docs/solver.md``, section 3, flattened by :mod:`memjax._emit`): a table of integer actions
that a fixed program can run without recursion. Positions are step counts: the hidden state ``h_k`` is the carry
after ``k`` steps, step ``k`` maps ``(h_{k-1}, x_k)`` to ``h_k`` and its internal state ``I_k`` (the VJP residuals
of that step).

Memory is a stack of *quanta*: a hidden state takes ``hidden_quanta`` of them, an internal state (residuals plus
the carry ``h_k`` needed to resume from it) ``internal_quanta``. Offsets are in quanta from the bottom of the
stack; the starting state ``h_0`` lives outside the stack (it is the scan's ``init``) but counts towards the
budget, exactly as in the paper's recurrences (``docs/conventions.md``).

Actions (columns ``op``, ``start``, ``stop``, ``offset``):

====================  =========================================================================================
``ADVANCE``           run steps ``start+1 .. stop`` from the register (``stop - start`` forward evaluations)
``SAVE_HIDDEN``       copy the register (``h_start``) to the stack at ``offset``
``SAVE_INTERNAL``     run step ``start+1`` with its VJP, store ``I_{start+1}`` and ``h_{start+1}`` at ``offset``
``RESTORE_HIDDEN``    register := ``h_start`` from ``offset`` (``offset == -1``: the initial carry)
``RESTORE_INTERNAL``  register := ``h_start`` from the internal state stored at ``offset``
``BACKWARD``          run step ``start+1`` with its VJP from the register and back-propagate it (one forward)
``BACKWARD_STORED``   back-propagate step ``start`` from the internal state at ``offset`` (no forward)
``FREE``              release the item at ``offset`` (``stop`` holds its size in quanta)
====================  =========================================================================================
"""

from __future__ import annotations

import bisect
import dataclasses
import enum

import numpy as np

__all__ = ["Op", "Schedule", "ScheduleError", "simulate"]


class Op(enum.IntEnum):
    """Action codes of a :class:`Schedule` (see the module docstring)."""

    ADVANCE = 0
    SAVE_HIDDEN = 1
    SAVE_INTERNAL = 2
    RESTORE_HIDDEN = 3
    RESTORE_INTERNAL = 4
    BACKWARD = 5
    BACKWARD_STORED = 6
    FREE = 7


_CODES = frozenset(int(op) for op in Op)


class ScheduleError(ValueError):
    """A schedule breaks one of the invariants checked by :func:`simulate`."""


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` observed while running a schedule symbolically.

    Attributes:
      forward_count: forward step evaluations, the first forward sweep included.
      peak_quanta: the most quanta held at once, the initial state included.
      hidden_slots: the most hidden states stored at once (the initial state excluded).
      internal_slots: the most internal states stored at once.
    """

    forward_count: int
    peak_quanta: int
    hidden_slots: int
    internal_slots: int


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A static program that back-propagates through ``length`` steps.

    Attributes:
      length: number of steps ``t``.
      op, start, stop, offset: int32 arrays, one entry per action (see :class:`Op`).
      hidden_quanta: stack quanta taken by one hidden state.
      internal_quanta: stack quanta taken by one internal state (residuals plus carry).
      units_per_quantum: size of one quantum in units of one hidden state (``1 / hidden_quanta``).
    """

    length: int
    op: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    offset: np.ndarray
    hidden_quanta: int
    internal_quanta: int

    def __post_init__(self):
        for name in ("op", "start", "stop", "offset"):
            array = np.asarray(getattr(self, name), dtype=np.int32)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "_summary", simulate(self))

    @classmethod
    def _emitted(cls, length, op, start, stop, offset, hidden_quanta, internal_quanta) -> Schedule:
        """A schedule written by memjax's own emitter (:mod:`memjax._emit`), whose invariants its tests check with
        :func:`simulate` on every kind and a grid of budgets: only its counts are taken here, with numpy
        (:func:`_count`), not a Python iteration per action."""
        schedule = object.__new__(cls)
        fields = (length, op, start, stop, offset, hidden_quanta, internal_quanta)
        for field, value in zip(dataclasses.fields(cls), fields):
            if field.name in ("op", "start", "stop", "offset"):
                value = np.asarray(value, dtype=np.int32)
                value.setflags(write=False)
            object.__setattr__(schedule, field.name, value)
        object.__setattr__(schedule, "_summary", _count(schedule))
        return schedule

    def __len__(self) -> int:
        return int(self.op.shape[0])

    @property
    def forward_count(self) -> int:
        """Forward step evaluations: the first sweep plus all recomputation (the paper's ``C(t, m)``)."""
        return self._summary.forward_count

    @property
    def stack_quanta(self) -> int:
        """Size of the stack an executor must allocate, in quanta (the initial state excluded)."""
        return self._summary.peak_quanta - self.hidden_quanta

    @property
    def peak_memory(self) -> float:
        """Most memory held at once, in units of one hidden state, the initial state included."""
        return self._summary.peak_quanta / self.hidden_quanta

    @property
    def hidden_slots(self) -> int:
        """Most hidden states stored at once (the initial state excluded)."""
        return self._summary.hidden_slots

    @property
    def internal_slots(self) -> int:
        """Most internal states stored at once."""
        return self._summary.internal_slots

    @property
    def first_backward(self) -> int:
        """Index of the first backward action: the actions before it form the first forward sweep."""
        backward = np.flatnonzero((self.op == Op.BACKWARD) | (self.op == Op.BACKWARD_STORED))
        return int(backward[0]) if backward.size else len(self)

    def describe(self, max_actions: int = 200) -> str:
        """A readable trace, one action a line (positions are step counts: ``h_k`` follows step ``k``)."""
        lines = [
            f"Schedule: {self.length} steps, {len(self)} actions, {self.forward_count} forward evaluations, "
            f"peak {self.peak_memory:g} hidden-state units "
            f"({self.hidden_slots} hidden + {self.internal_slots} internal slots)"
        ]
        for index, (op, a, b, off) in enumerate(zip(self.op, self.start, self.stop, self.offset)):
            if index == max_actions:
                lines.append(f"... {len(self) - max_actions} more actions")
                break
            lines.append(f"{index:5d}  {_describe_action(Op(op), int(a), int(b), int(off))}")
        return "\n".join(lines)

    def plot(self, ax=None):
        """Draw the schedule like the paper's illustrations: forward evaluations (x) against position (y).

        Grey lines are forward recomputation, blue dots stored hidden states, orange squares stored internal
        states and red marks back-propagated steps. Needs matplotlib (the ``notebooks`` extra).

        Returns:
          The matplotlib ``Axes``.
        """
        import matplotlib.pyplot as plt  # optional dependency

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 4))
        clock = 0
        for op, a, b, _ in zip(self.op, self.start, self.stop, self.offset):
            if op == Op.ADVANCE:
                ax.plot([clock, clock + b - a], [a, b], color="0.6", lw=1)
                clock += b - a
            elif op == Op.SAVE_HIDDEN:
                ax.plot(clock, a, "o", color="tab:blue", ms=4)
            elif op == Op.SAVE_INTERNAL:
                ax.plot([clock, clock + 1], [a, a + 1], color="0.6", lw=1)
                clock += 1
                ax.plot(clock, a + 1, "s", color="tab:orange", ms=4)
            elif op == Op.BACKWARD:
                clock += 1
                ax.plot(clock, a + 1, "x", color="tab:red", ms=5)
            elif op == Op.BACKWARD_STORED:
                ax.plot(clock, a, "x", color="tab:red", ms=5)
        ax.set_xlabel("forward evaluations")
        ax.set_ylabel("step")
        ax.set_title(f"t={self.length}: {self.forward_count} forwards, peak {self.peak_memory:g} units")
        return ax


def _describe_action(op: Op, a: int, b: int, off: int) -> str:
    if op == Op.ADVANCE:
        return f"advance     h_{a} -> h_{b} ({b - a} steps)"
    if op == Op.SAVE_HIDDEN:
        return f"save h_{a}    @ {off}"
    if op == Op.SAVE_INTERNAL:
        return f"save I_{a + 1}    @ {off} (step {a + 1} with its VJP)"
    if op == Op.RESTORE_HIDDEN:
        return f"restore h_{a} from " + ("init" if off < 0 else f"@ {off}")
    if op == Op.RESTORE_INTERNAL:
        return f"restore h_{a} from I_{a} @ {off}"
    if op == Op.BACKWARD:
        return f"backward step {a + 1} (recomputed from h_{a})"
    if op == Op.BACKWARD_STORED:
        return f"backward step {a} from I_{a} @ {off}"
    return f"free @ {off} ({b} quanta)"


def simulate(schedule: Schedule, budget_quanta: int | None = None) -> SimulationResult:
    """Run a schedule symbolically and check every invariant an executor relies on.

    Checks that every step is back-propagated exactly once, in reverse order; that each backward step has its
    internal state (recomputed from the register at ``h_{k-1}`` or stored); that every action reads a state that
    is there; that stored items never overlap; and, when ``budget_quanta`` is given, that the memory held (the
    initial state included) never exceeds it.

    Raises:
      ScheduleError: naming the first action that breaks an invariant.
    """
    t, s, i = schedule.length, schedule.hidden_quanta, schedule.internal_quanta
    register = 0  # position held by the register, None when it holds nothing usable
    pending = t  # next step to back-propagate
    items: dict[int, tuple[str, int, int]] = {}  # offset -> (kind, position, size)
    offsets: list[int] = []  # sorted keys of items
    forwards = hidden = internal = peak_hidden = peak_internal = 0
    held = peak = s  # the initial state is held throughout

    def fail(index, message):
        code = int(schedule.op[index])
        name = Op(code).name if code in _CODES else f"code {code}"
        raise ScheduleError(f"action {index} ({name}): {message}")

    def store(index, kind, position, offset, size):
        nonlocal held, peak
        if offset < 0:
            fail(index, f"negative offset {offset}")
        where = bisect.bisect_left(offsets, offset)
        below = offsets[where - 1] if where else None
        above = offsets[where] if where < len(offsets) else None
        if below is not None and below + items[below][2] > offset:
            fail(index, f"item at {offset} overlaps the item at {below}")
        if above is not None and offset + size > above:
            fail(index, f"item at {offset} overlaps the item at {above}")
        offsets.insert(where, offset)
        items[offset] = (kind, position, size)
        held += size
        peak = max(peak, held)
        if budget_quanta is not None and held > budget_quanta:
            fail(index, f"holds {held} quanta, over the budget of {budget_quanta}")

    for index in range(len(schedule)):
        op, a, b, off = (
            int(schedule.op[index]),
            int(schedule.start[index]),
            int(schedule.stop[index]),
            int(schedule.offset[index]),
        )
        if op == Op.ADVANCE:
            if register != a or not a <= b < pending:
                fail(index, f"advance {a}->{b} with the register at {register}, next backward step {pending}")
            forwards += b - a
            register = b
        elif op in (Op.SAVE_HIDDEN, Op.SAVE_INTERNAL):
            if register != a:
                fail(index, f"saves at {a} with the register at {register}")
            if op == Op.SAVE_HIDDEN:
                store(index, "h", a, off, s)
                hidden += 1
                peak_hidden = max(peak_hidden, hidden)
            else:
                if a + 1 >= pending:
                    fail(index, f"saves I_{a + 1}, not before the next backward step {pending}")
                forwards += 1
                register = a + 1
                store(index, "i", a + 1, off, i)
                internal += 1
                peak_internal = max(peak_internal, internal)
        elif op == Op.RESTORE_HIDDEN:
            if off == -1:
                if a != 0:
                    fail(index, f"restores h_{a} from the initial state")
            elif items.get(off, (None,))[:2] != ("h", a):
                fail(index, f"no h_{a} stored at {off}")
            register = a
        elif op == Op.RESTORE_INTERNAL:
            if items.get(off, (None,))[:2] != ("i", a):
                fail(index, f"no I_{a} stored at {off}")
            register = a
        elif op == Op.BACKWARD:
            if register != a or a + 1 != pending:
                fail(index, f"back-propagates step {a + 1} with register {register}, next step {pending}")
            forwards += 1
            pending -= 1
            register = None
        elif op == Op.BACKWARD_STORED:
            if a != pending or items.get(off, (None,))[:2] != ("i", a):
                fail(index, f"back-propagates step {a} from {off}, next step {pending}")
            pending -= 1
        elif op == Op.FREE:
            if off not in items or items[off][2] != b:
                fail(index, f"frees {b} quanta at {off}, where {items.get(off)} is stored")
            kind = items.pop(off)[0]
            del offsets[bisect.bisect_left(offsets, off)]  # frees are mostly at the top: no search, no shift
            held -= b
            hidden -= kind == "h"
            internal -= kind == "i"
        else:
            fail(index, f"unknown action code {op}")
    if pending != 0:
        raise ScheduleError(f"the schedule ends with steps 1..{pending} not back-propagated")
    return SimulationResult(forwards, peak, peak_hidden, peak_internal)


def _count(schedule: Schedule) -> SimulationResult:
    """What :func:`simulate` returns for a valid schedule, with numpy: forwards, peak quanta, and the most hidden
    and internal states held (each ``FREE`` releases the item last stored at its offset)."""
    op, start, stop, offset = schedule.op, schedule.start, schedule.stop, schedule.offset
    s, i = schedule.hidden_quanta, schedule.internal_quanta
    advance = op == Op.ADVANCE
    forwards = int(np.sum((stop - start)[advance], dtype=np.int64))
    forwards += int(np.count_nonzero((op == Op.SAVE_INTERNAL) | (op == Op.BACKWARD)))
    hidden_store, internal_store, free = op == Op.SAVE_HIDDEN, op == Op.SAVE_INTERNAL, op == Op.FREE
    held = np.cumsum(np.where(hidden_store, s, 0) + np.where(internal_store, i, 0) - np.where(free, stop, 0))
    peak = s + max(int(held.max(initial=0)), 0)
    # The kind each FREE releases: the store just before it at the same offset, in (offset, index) order.
    events = np.flatnonzero(hidden_store | internal_store | free)
    order = events[np.lexsort((events, offset[events]))]
    freed = order[1:][free[order[1:]]]
    freed_hidden = hidden_store[order[:-1][free[order[1:]]]]
    hidden_delta = hidden_store.astype(np.int64)
    internal_delta = internal_store.astype(np.int64)
    hidden_delta[freed[freed_hidden]] = -1
    internal_delta[freed[~freed_hidden]] = -1
    peak_hidden = max(int(np.cumsum(hidden_delta).max(initial=0)), 0)
    peak_internal = max(int(np.cumsum(internal_delta).max(initial=0)), 0)
    return SimulationResult(forwards, peak, peak_hidden, peak_internal)
