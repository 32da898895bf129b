"""Pipelined execution of a schedule: a few loops with static trip counts and uniform bodies (pure numpy).

A schedule whose backward sweep stores no hidden state (every policy but HSM's and MSM's binomial-like parts:
the default budget, Chen, ISM, most MSM budgets) recomputes segments one after the other: restore the segment's
checkpoint, run its steps storing their internal states (or advancing without storing), back-propagate them.
Run as one action per row, every step pays a dispatch. Here the same work is re-timed into a pipeline: the
backward sweep back-propagates one step per iteration and, in the same iteration, recomputes one step of the
segments still to come (the *forward stream*: the schedule's recomputations in their order; a step the schedule
advances through is run the same way, its internal state written to a slot that is free again at once). Each
iteration then has the same shape, so the sweep is a handful of ``lax.scan``s with static trip counts and no
conditionals inside:

* *lead-in*: the first ``lead`` forwards, before any step is back-propagated;
* *main*: ``chunks`` chunks of ``chunk`` iterations, each iteration one backward step and one forward; before
  each chunk one conditional may add a forward, where the segments ahead grow longer (the lead, the number
  of recomputed internal states held, must grow with them);
* *remainder*: the same for the last, shorter chunk;
* *tail*: backward steps only, once every forward is done.

The forward sweep is likewise made uniform: one loop of plain steps that writes each step's incoming carry to a
table-given place (the next checkpoint's slot, overwritten until that checkpoint is reached), one loop of steps
under ``jax.vjp`` for the run of internal states stored at the end, and one loop that computes the internal
states stored as checkpoints inside the sweep from the carries written in their slots (one forward each, which
the schedule's own first sweep made under a conditional instead).

Every stored item is placed anew by simulation: first-fit on the stack of quanta, items freed after their last
use. :func:`pipeline` returns ``None`` for schedules outside the family, and the caller runs the schedule's
actions one by one instead.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from memjax._schedule import Op, Schedule

__all__ = ["Pipeline", "pipeline", "CHUNK"]

CHUNK = 16  # iterations per conditional of the main loop: conditionals per gradient are about length / CHUNK

# Restore codes of a forward: keep the register, load a carry from the pools, or take the initial carry.
KEEP, LOAD_HIDDEN, LOAD_INTERNAL, INIT = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The tables of a pipelined schedule (offsets in quanta; steps 1-based; see the module docstring).

    Forward sweep:
      carry_step: steps ``1..len(carry_step)`` run plain, their incoming carry written to the item at
        ``carry_offset`` of kind ``carry_kind`` (``LOAD_HIDDEN``: a hidden state, ``LOAD_INTERNAL``: the carry
        part of an internal state), then steps up to ``run_start - 1`` plain without a write.
      run_start, run_offset: steps ``run_start..length - 1`` run under ``jax.vjp``, their internal states
        stored at ``run_offset``.
      checkpoint_step, checkpoint_offset: internal states computed after the sweep from the carry written in
        their own slot.

    Backward sweep (after step ``length``, back-propagated from the residuals the forward sweep kept):
      forward_step, restore_kind, restore_offset, forward_offset: the forward stream: step ``forward_step[j]``
        runs under ``jax.vjp`` from the carry read at ``restore_offset[j]``: a hidden state (``LOAD_HIDDEN``),
        the initial carry, kept at ``stack_quanta`` (``INIT``), or the carry part of an internal state
        (``LOAD_INTERNAL``, or ``KEEP``: the previous forward's own), and its internal state is stored at
        ``forward_offset[j]``. Every carry is read from the pools: no register is carried, and no select
        between sources is made per iteration.
      backward_offset: where the internal state of step ``length - 1 - j`` is read, ``j = 0, 1, ...``.
      lead, chunk, chunks, remainder: the loop structure; ``extra[c]`` says whether chunk ``c`` (the
        remainder being chunk ``chunks``) starts with an additional forward.
      stack_quanta: the stack the pipeline needs; the pools hold the initial carry above it (``hidden_quanta``
        more quanta, within the budget, which counts the initial carry).
      forward_count: forward evaluations, the first sweep included.
    """

    length: int
    carry_step: int
    carry_kind: np.ndarray
    carry_offset: np.ndarray
    run_start: int
    run_offset: np.ndarray
    checkpoint_step: np.ndarray
    checkpoint_offset: np.ndarray
    forward_step: np.ndarray
    restore_kind: np.ndarray
    restore_offset: np.ndarray
    forward_offset: np.ndarray
    backward_offset: np.ndarray
    lead: int
    chunk: int
    chunks: int
    remainder: int
    extra: np.ndarray
    stack_quanta: int
    forward_count: int

    @property
    def conditionals(self) -> int:
        """Conditionals evaluated per gradient: one per chunk of the main loop and one for the remainder."""
        return self.chunks + (self.remainder > 0)

    @property
    def main_forwards(self) -> int:
        """Forwards of the main loop (one per iteration)."""
        return self.chunks * self.chunk + self.remainder


def pipeline(schedule: Schedule, chunk: int = CHUNK, stack_quanta: int | None = None) -> Pipeline | None:
    """The pipelined form of ``schedule``, or ``None`` if it is not of the two-forward family or the pipeline
    would need more than ``stack_quanta`` (default: the schedule's own stack)."""
    t = schedule.length
    if stack_quanta is None:
        stack_quanta = schedule.stack_quanta
    if t < 2:
        return None
    stream = _forward_stream(schedule)
    if stream is None:
        return None
    forward_step, restore_kind, restore_source, kept = stream
    first = _first_sweep(schedule, set(restore_source[restore_kind == LOAD_HIDDEN].tolist()))
    if first is None:
        return None
    hidden, internal, run_start, checkpoints, writes = first

    # Which forward (or first-sweep item) each backward step j (step t - 1 - j) reads.
    produced = {int(k): j for j, k in enumerate(forward_step) if kept[j]}
    need = np.zeros(t - 1, np.int64)  # forwards that must be done before backward step j
    for j in range(t - 1):
        k = t - 1 - j
        if k in produced:
            need[j] = produced[k] + 1
        elif k not in internal:
            return None  # pragma: no cover - a schedule always has the state of every step
    need = np.maximum.accumulate(need)
    timing = _timing(len(forward_step), need, chunk)
    if timing is None:
        return None
    lead, chunks, remainder, extra, done_before = timing
    placed = _place(
        schedule, forward_step, restore_kind, restore_source, kept, hidden, internal, done_before, stack_quanta
    )
    if placed is None:
        return None
    hidden_offset, internal_offset, restore_offset, forward_offset, backward_offset, peak = placed

    # The forward sweep's carry writes: a step without a write of its own writes where the next write goes.
    carry_step = max(writes, default=0)
    carry_kind = np.zeros(carry_step, np.int32)
    carry_offset = np.zeros(carry_step, np.int32)
    target = None
    for k in range(carry_step, 0, -1):
        if k in writes:
            kind, key = writes[k]
            target = (kind, hidden_offset[key] if kind == LOAD_HIDDEN else internal_offset[key])
        carry_kind[k - 1], carry_offset[k - 1] = target
    return Pipeline(
        length=t,
        carry_step=carry_step,
        carry_kind=carry_kind,
        carry_offset=carry_offset,
        run_start=run_start,
        run_offset=np.array([internal_offset[k] for k in range(run_start, t)], np.int32),
        checkpoint_step=np.array(checkpoints, np.int32),
        checkpoint_offset=np.array([internal_offset[c] for c in checkpoints], np.int32),
        forward_step=forward_step,
        restore_kind=restore_kind,
        restore_offset=restore_offset,
        forward_offset=forward_offset,
        backward_offset=backward_offset,
        lead=lead,
        chunk=chunk,
        chunks=chunks,
        remainder=remainder,
        extra=extra,
        stack_quanta=peak,
        forward_count=t + len(checkpoints) + len(forward_step),
    )


def _first_sweep(schedule: Schedule, restored: set):
    """What the forward sweep stores: ``None`` unless it is hidden states, internal states and a final run.

    Hidden states whose offset is not in ``restored`` are never read, and not stored.

    Returns ``(hidden, internal, run_start, checkpoints, writes)``: the schedule's offsets of ``h_a`` by position
    and of ``I_k`` by step, the first step of the run of internal states that ends at step ``length - 1``, the
    steps of the other internal states, and for each step with a carry write before it, ``(LOAD_HIDDEN, a)``
    or ``(LOAD_INTERNAL, c)``.
    """
    t, first = schedule.length, schedule.first_backward
    hidden = {}  # position a -> offset of h_a
    internal = {}  # step k -> offset of I_k
    for op, a, off in zip(schedule.op[:first], schedule.start[:first], schedule.offset[:first]):
        if op == Op.SAVE_HIDDEN and int(off) in restored:
            hidden[int(a)] = int(off)
        elif op == Op.SAVE_INTERNAL:
            internal[int(a) + 1] = int(off)
    run_start = t
    while run_start - 1 in internal:  # the run of internal states ending at step t - 1
        run_start -= 1
    checkpoints = sorted(k for k in internal if k < run_start)
    # Carry writes before step k = a + 1: h_a for a hidden state, h_{c-1} into I_c's slot for a checkpoint.
    writes = {a + 1: (LOAD_HIDDEN, a) for a in hidden if a > 0}
    for c in checkpoints:
        if c in writes:
            return None  # pragma: no cover - a position holds one state
        writes[c] = (LOAD_INTERNAL, c)
    if max(writes, default=0) >= run_start:
        return None  # a state written inside the final run or before the last step
    return hidden, internal, run_start, checkpoints, writes


def _forward_stream(schedule: Schedule):
    """The backward sweep's recomputations in order, with the restore before each and whether the internal state
    is kept (an ``ADVANCE``'s steps are not); ``None`` if the sweep also stores hidden states."""
    first = schedule.first_backward
    steps, kinds, sources, kept = [], [], [], []
    pending = None
    register = None
    for op, a, b, off in zip(
        schedule.op[first + 1 :], schedule.start[first + 1 :], schedule.stop[first + 1 :], schedule.offset[first + 1 :]
    ):
        op, a, off = int(op), int(a), int(off)
        if op == Op.RESTORE_HIDDEN:
            pending = (INIT, -1) if off < 0 else (LOAD_HIDDEN, off)
            register = a
        elif op == Op.RESTORE_INTERNAL:
            pending = (LOAD_INTERNAL, off)
            register = a
        elif op in (Op.SAVE_INTERNAL, Op.BACKWARD):
            if register != a:
                return None  # pragma: no cover - simulate() guarantees it
            kind, source = pending if pending is not None else (KEEP, -1)
            steps.append(a + 1)
            kinds.append(kind)
            sources.append(source)
            kept.append(True)
            pending = None
            register = a + 1 if op == Op.SAVE_INTERNAL else None
        elif op == Op.ADVANCE:  # forwards whose internal states are not kept
            if register != a:
                return None  # pragma: no cover - simulate() guarantees it
            for k in range(a + 1, int(b) + 1):
                kind, source = pending if pending is not None else (KEEP, -1)
                steps.append(k)
                kinds.append(kind)
                sources.append(source)
                kept.append(False)
                pending = None
            register = int(b)
        elif op in (Op.BACKWARD_STORED, Op.FREE):
            continue
        else:
            return None  # SAVE_HIDDEN after the first backward step: not this family
    return (np.array(steps, np.int32), np.array(kinds, np.int32), np.array(sources, np.int32), np.array(kept, bool))


def _timing(forwards: int, need: np.ndarray, chunk: int):
    """Lead-in, chunks and extras such that forward ``need[j] - 1`` is done before backward step ``j``.

    The least lead-in that works: more would hold more internal states at once.

    Returns ``(lead, chunks, remainder, extra, done_before)``, ``done_before[j]`` being the forwards done before
    backward step ``j``; ``None`` if one extra forward per chunk cannot keep up with the segments' growth.
    """
    n = len(need)
    for lead in range(int(need[0]), forwards + 1):
        done, j, extra, sizes = lead, 0, [], []
        done_before = np.zeros(n, np.int64)
        while done < forwards and j < n:
            width = min(chunk, n - j)
            lag = int(np.max(need[j : j + width] - (done + np.arange(width))))  # forwards missing, none added
            if lag > 1:
                break
            done += max(lag, 0)
            size = min(chunk, forwards - done, n - j)  # iterations of this chunk: a backward, then a forward
            done_before[j : j + size] = done + np.arange(size)
            extra.append(max(lag, 0))
            sizes.append(size)
            done += size
            j += size
            if size < chunk:
                break
        done_before[j:] = done
        if done < forwards or np.any(done_before < need) or (sizes and min(sizes[:-1], default=chunk) < chunk):
            continue
        remainder = sizes[-1] if sizes and sizes[-1] < chunk else 0
        return lead, len(sizes) - (remainder > 0), remainder, np.array(extra, np.int32), done_before
    return None


def _place(schedule, forward_step, restore_kind, restore_source, kept, hidden, internal, done_before, stack_quanta):
    """Place every stored item by simulating the pipeline in program order.

    Hidden states go to the bottom of the stack in order of position (the backward sweep frees them from the
    latest down, so their region shrinks from the top); internal states, all of one size, to slots counted
    down from the top of the stack, each new one in the lowest free slot. The stack is as high as the largest
    sum, over the run, of the hidden region and the internal slots in use.

    Returns ``(hidden_offset, internal_offset, restore_offset, forward_offset, backward_offset, peak)`` (the
    first two map a first-sweep position or step to its new offset), or ``None`` if the pipeline needs more
    than ``stack_quanta``.
    """
    t, s, i = schedule.length, schedule.hidden_quanta, schedule.internal_quanta
    positions = sorted(a for a in hidden if a > 0)
    hidden_offset = {a: rank * s for rank, a in enumerate(positions)}
    live_hidden = set(positions)
    slots = _Slots()
    slot_of = {k: slots.take() for k in sorted(internal)}  # step -> internal slot
    first_sweep_slots = dict(slot_of)
    last_restore = {}
    for j, (kind, source) in enumerate(zip(restore_kind, restore_source)):
        if kind == LOAD_HIDDEN:
            last_restore[int(source)] = j
    position_of = {off: a for a, off in hidden.items()}
    n = t - 1
    forward_slot = np.zeros(len(forward_step), np.int64)
    restore_slot = np.full(len(forward_step), -1, np.int64)  # internal slot, or -1 for a hidden state
    restore_hidden = np.zeros(len(forward_step), np.int64)
    backward_slot = np.zeros(n, np.int64)
    peak = 0

    def extent():
        top = max(live_hidden) if live_hidden else None
        return (hidden_offset[top] + s if top is not None else 0) + slots.extent * i

    peak = extent()
    order = np.searchsorted(done_before, np.arange(len(forward_step)), side="right")  # backwards before each forward
    same_iteration = np.zeros(len(forward_step), bool)  # forward j runs in the iteration of backward order[j] - 1
    paired = order >= 1
    same_iteration[paired] = done_before[order[paired] - 1] == np.arange(len(forward_step))[paired]
    b = 0

    def backward(b):
        k = t - 1 - b
        backward_slot[b] = slot_of.pop(k)
        slots.free(int(backward_slot[b]))
        return b + 1

    for j in range(len(forward_step)):
        # The backward steps before forward j, but the one of forward j's own iteration: an iteration writes its
        # forward before it reads its backward step (XLA copies the pools otherwise), so that step's slot is
        # still held while the forward takes one.
        while b < order[j] - 1 or (b == order[j] - 1 and not same_iteration[j]):
            b = backward(b)
        kind, source = int(restore_kind[j]), int(restore_source[j])
        if kind == LOAD_HIDDEN:
            a = position_of[source]
            restore_hidden[j] = hidden_offset[a]
            if last_restore[source] == j:
                live_hidden.discard(a)
        elif kind == LOAD_INTERNAL:
            restore_slot[j] = slot_of[int(forward_step[j]) - 1]
        elif kind == KEEP:  # the carry part of the previous forward's internal state, written just before
            if j == 0:
                return None  # pragma: no cover - the sweep starts with a restore
            restore_slot[j] = forward_slot[j - 1]
        else:
            restore_hidden[j] = -1  # the initial carry's slot, above the stack: placed below
        forward_slot[j] = slots.take()
        peak = max(peak, extent())
        if kept[j]:
            slot_of[int(forward_step[j])] = int(forward_slot[j])
        else:  # written and never read: the slot is free again for the next forward
            slots.free(int(forward_slot[j]))
    while b < n:
        b = backward(b)
    if peak > stack_quanta:
        return None
    top = lambda slot: peak - (slot + 1) * i  # noqa: E731 - an internal slot's offset
    internal_offset = {k: top(slot) for k, slot in first_sweep_slots.items()}
    restore_offset = np.where(
        restore_slot >= 0, top(restore_slot), np.where(restore_hidden < 0, peak, restore_hidden)
    ).astype(np.int32)
    return (
        hidden_offset,
        internal_offset,
        restore_offset,
        top(forward_slot).astype(np.int32),
        top(backward_slot).astype(np.int32),
        peak,
    )


class _Slots:
    """Internal-state slots: the lowest free one is taken; ``extent`` is the most slots ever spanned."""

    def __init__(self):
        self.free_slots: list[int] = []
        self.next = 0
        self.extent = 0

    def take(self) -> int:
        if self.free_slots:
            slot = heapq.heappop(self.free_slots)
        else:
            slot = self.next
            self.next += 1
        self.extent = max(self.extent, slot + 1)
        return slot

    def free(self, slot: int) -> None:
        heapq.heappush(self.free_slots, slot)
