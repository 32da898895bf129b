"""Pipelined execution of a schedule: a few loops with static trip counts and uniform bodies (pure numpy).

A schedule whose backward sweep stores no hidden state (every policy but HSM's and MSM's binomial-like parts:
the default budget, Chen, ISM, most MSM budgets) recomputes segments one after the other: restore the segment's
checkpoint, run its steps storing their internal states (or advancing without storing), back-propagate them.
Run as one action per row, every step pays a dispatch. Here the same work is re-timed into a pipeline: the
backward sweep back-propagates one step per iteration and, in the same iteration, recomputes one step of the
segments still to come (the *forward stream*: the schedule's recomputations in their order; a step the schedule
advances through is run the same way, its internal state written to a slot that is free again at once). The
stream is timed as:

* *lead-in*: the first ``lead`` forwards, before any step is back-propagated;
* *main*: ``chunks`` chunks of ``chunk`` iterations, each iteration one forward and one backward step; before
  each chunk one extra forward may be added, where the segments ahead grow longer (the lead, the number
  of recomputed internal states held, must grow with them);
* *remainder*: the same for the last, shorter chunk;
* *tail*: backward steps only, once every forward is done.

The executor runs the lead-in, the chunks and the remainder as one ``lax.scan``, an iteration per forward: a
forward without a backward step of its own (:attr:`Pipeline.paired`) back-propagates its own step and discards
the result, so that every iteration has the same shape and no conditional is needed; the tail is a second loop.

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

MAX_FORWARDS = 1 << 26  # recomputations a pipeline may hold (its tables take 16 bytes each)
CHUNK = 16  # iterations of the main loop per extra forward it may add

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
        """Conditionals evaluated per gradient: none (the extra forwards are iterations of the same loop)."""
        return 0

    @property
    def main_forwards(self) -> int:
        """Forwards paired with a backward step (one per iteration of the chunks)."""
        return self.chunks * self.chunk + self.remainder

    @property
    def paired(self) -> np.ndarray:
        """Per forward of the stream, whether the next backward step follows it in its iteration: ``False`` for
        the lead-in and the chunks' extra forwards."""
        sizes = np.full(len(self.extra), self.chunk, np.int64)
        if self.remainder:
            sizes[-1] = self.remainder
        counts = np.stack([self.extra.astype(np.int64), sizes], axis=1).ravel()  # unpaired, then paired
        paired = np.repeat(np.tile([False, True], len(sizes)), counts)
        return np.concatenate([np.zeros(self.lead, bool), paired])


def pipeline(schedule: Schedule, chunk: int = CHUNK, stack_quanta: int | None = None) -> Pipeline | None:
    """The pipelined form of ``schedule``, or ``None`` if it is not of the two-forward family or the pipeline
    would need more than ``stack_quanta`` (default: the schedule's own stack)."""
    t = schedule.length
    if stack_quanta is None:
        stack_quanta = schedule.stack_quanta
    timed = _timed(schedule, chunk)
    if timed is None or timed.peak > stack_quanta:
        return None
    (forward_step, restore_kind, restore_source, kept), first, timing = timed.stream, timed.first, timed.timing
    hidden, internal, run_start, checkpoints, writes = first
    lead, chunks, remainder, extra, done_before = timing
    placed = _place(schedule, forward_step, restore_kind, restore_source, kept, hidden, internal, done_before)
    hidden_offset, internal_offset, restore_offset, forward_offset, backward_offset, peak = placed
    if peak != timed.peak:
        raise AssertionError("the placement's peak differs from the count of live states")  # pragma: no cover

    # The forward sweep's carry writes: a step without a write of its own writes where the next write goes.
    carry_step = max(writes, default=0)
    written = np.array(sorted(writes), np.int64)  # steps with a write of their own
    targets = [writes[k] for k in written.tolist()]
    kinds = np.array([kind for kind, _ in targets], np.int32)
    offsets = np.array(
        [hidden_offset[key] if kind == LOAD_HIDDEN else internal_offset[key] for kind, key in targets], np.int32
    )
    next_write = np.searchsorted(written, np.arange(1, carry_step + 1))  # the first write at or after each step
    carry_kind, carry_offset = kinds[next_write], offsets[next_write]
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


def pipeline_size(schedule: Schedule, chunk: int = CHUNK) -> tuple[int, int] | None:
    """``(stack_quanta, forward_count)`` of :func:`pipeline`'s result without a stack limit, or ``None`` if the
    schedule does not pipeline; without placing the states (a fraction of the time)."""
    timed = _timed(schedule, chunk)
    if timed is None:
        return None
    forward_step, checkpoints = timed.stream[0], timed.first[3]
    return timed.peak, schedule.length + len(checkpoints) + len(forward_step)


@dataclasses.dataclass(frozen=True)
class _Timed:
    """A schedule's forward stream, first sweep and timing (the pipeline but for where states are placed), and the
    stack the pipeline will need."""

    stream: tuple
    first: tuple
    timing: tuple
    peak: int


def _timed(schedule: Schedule, chunk: int) -> _Timed | None:
    t = schedule.length
    if t < 2:
        return None
    stream = _forward_stream(schedule)
    if stream is None:
        return None
    forward_step, restore_kind, restore_source, kept = stream
    first = _first_sweep(schedule, set(restore_source[restore_kind == LOAD_HIDDEN].tolist()))
    if first is None:
        return None
    # Which forward (or first-sweep item) each backward step j (step t - 1 - j) reads.
    produced = np.zeros(t, np.int64)  # by step: 1 + the forward that keeps its internal state, 0 for none
    produced[forward_step[kept]] = np.flatnonzero(kept) + 1
    need = np.maximum.accumulate(produced[t - 1 : 0 : -1])  # forwards that must be done before backward step j
    timing = _timing(len(forward_step), need, chunk)
    if timing is None:
        return None
    return _Timed(stream, first, timing, _peak(schedule, stream, first, timing[-1]))


def _backwards_before(done_before: np.ndarray, forwards: int) -> np.ndarray:
    """The backward steps done before each forward is written. An iteration writes its forward before it reads its
    backward step (XLA copies the pools otherwise), so the backward step of a forward's own iteration comes
    after it, and that step's slot is still held while the forward takes one."""
    order = np.searchsorted(done_before, np.arange(forwards), side="right")  # backwards before each forward
    same_iteration = np.zeros(forwards, bool)  # forward j runs in the iteration of backward order[j] - 1
    paired = order >= 1
    same_iteration[paired] = done_before[order[paired] - 1] == np.arange(forwards)[paired]
    return order - same_iteration


def _peak(schedule: Schedule, stream, first, done_before: np.ndarray) -> int:
    """The stack :func:`_place` will need, from counts alone: the hidden region (up to the highest hidden state
    still to be restored) plus the internal slots ever spanned, which, all of one size and each taken lowest
    first, are as many as were ever held at once."""
    s, i = schedule.hidden_quanta, schedule.internal_quanta
    forward_step, restore_kind, restore_source, kept = stream
    hidden, internal = first[0], first[1]
    forwards = len(forward_step)
    rank_of_source = {hidden[a]: rank for rank, a in enumerate(sorted(a for a in hidden if a > 0))}
    # Forward j ends the hidden states whose last restore it is: 1 + the highest rank still live after it.
    loads = np.flatnonzero(restore_kind == LOAD_HIDDEN)
    last = {}
    for j, source in zip(loads.tolist(), restore_source[loads].tolist()):
        last[rank_of_source[source]] = j
    ending = np.zeros(forwards + 1, np.int64)
    for rank, j in last.items():
        ending[j] = max(ending[j], rank + 1)
    hidden_count = np.maximum.accumulate(ending[::-1])[::-1][1:]  # live ones last restored after forward j
    # Internal states held once forward j took its slot: the first sweep's, the forwards so far (those not kept
    # freed at once), less the backward steps before it.
    dropped_before = np.concatenate([[0], np.cumsum(~kept)[:-1]])
    held = len(internal) + np.arange(1, forwards + 1) - dropped_before - _backwards_before(done_before, forwards)
    spanned = np.maximum.accumulate(np.maximum(held, len(internal)))
    initial = len(rank_of_source) * s + len(internal) * i
    return int(max(initial, np.max(hidden_count * s + spanned * i, initial=initial)))


def _first_sweep(schedule: Schedule, restored: set):
    """What the forward sweep stores: ``None`` unless it is hidden states, internal states and a final run.

    Hidden states whose offset is not in ``restored`` are never read, and not stored.

    Returns ``(hidden, internal, run_start, checkpoints, writes)``: the schedule's offsets of ``h_a`` by position
    and of ``I_k`` by step, the first step of the run of internal states that ends at step ``length - 1``, the
    steps of the other internal states, and for each step with a carry write before it, ``(LOAD_HIDDEN, a)``
    or ``(LOAD_INTERNAL, c)``.
    """
    t, first = schedule.length, schedule.first_backward
    op, start, offset = schedule.op[:first], schedule.start[:first], schedule.offset[:first]
    saved = (op == Op.SAVE_HIDDEN) & np.isin(offset, np.fromiter(restored, np.int64, len(restored)))
    hidden = dict(zip(start[saved].tolist(), offset[saved].tolist()))  # position a -> offset of h_a
    stored = op == Op.SAVE_INTERNAL
    internal = dict(zip((start[stored] + 1).tolist(), offset[stored].tolist()))  # step k -> offset of I_k
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
    is kept (an ``ADVANCE``'s steps are not); ``None`` if the sweep also stores hidden states.

    The schedule is valid (:func:`memjax._schedule.simulate`), so each forward starts from the register or from
    the restore just before it (back-propagations from stored states and frees in between do not matter)."""
    first = schedule.first_backward
    op, start, stop, offset = (
        column[first + 1 :] for column in (schedule.op, schedule.start, schedule.stop, schedule.offset)
    )
    if np.any(op == Op.SAVE_HIDDEN):
        return None  # not this family
    keep = (op != Op.BACKWARD_STORED) & (op != Op.FREE)
    op, start, stop, offset = op[keep], start[keep], stop[keep], offset[keep]
    restore_kind = np.select(
        [op == Op.RESTORE_INTERNAL, (op == Op.RESTORE_HIDDEN) & (offset < 0), op == Op.RESTORE_HIDDEN],
        [LOAD_INTERNAL, INIT, LOAD_HIDDEN],
        KEEP,
    )
    forward = (op == Op.SAVE_INTERNAL) | (op == Op.BACKWARD) | (op == Op.ADVANCE)
    rows = np.flatnonzero(forward)
    before = rows - 1  # the row before each forward row: a restore, or a forward (KEEP)
    kind = np.where(before >= 0, restore_kind[np.maximum(before, 0)], KEEP)
    source = np.where(kind == KEEP, -1, offset[np.maximum(before, 0)])
    count = np.where(op[rows] == Op.ADVANCE, stop[rows] - start[rows], 1).astype(np.int64)  # forwards of each row
    if count.sum() > min(MAX_FORWARDS, 2 * schedule.length):
        # Far outside the two-forward family: a chunk adds at most one forward to one per backward step, so the
        # lead-in would hold most of these recomputations at once (on a grid of 55,123 pipelines, none of the
        # 1,610 with more than 2t fitted its policy's memory), and their stream takes seconds at 10^5 steps.
        return None
    first_of_row = np.cumsum(count) - count
    within = np.arange(int(count.sum())) - np.repeat(first_of_row, count)
    steps = np.repeat(start[rows], count) + 1 + within
    kinds = np.where(within == 0, np.repeat(kind, count), KEEP)
    sources = np.where(within == 0, np.repeat(source, count), -1)
    kept = np.repeat(op[rows] != Op.ADVANCE, count)
    return steps.astype(np.int32), kinds.astype(np.int32), sources.astype(np.int32), kept


def _timing(forwards: int, need: np.ndarray, chunk: int):
    """Lead-in, chunks and extras such that forward ``need[j] - 1`` is done before backward step ``j``.

    The least lead-in that works: more would hold more internal states at once.

    Returns ``(lead, chunks, remainder, extra, done_before)``, ``done_before[j]`` being the forwards done before
    backward step ``j``; ``None`` if one extra forward per chunk cannot keep up with the segments' growth.
    """
    lead = _least_lead(forwards, need, chunk)
    while lead is not None and lead <= forwards:
        timing = _chunks(lead, forwards, need, chunk)
        if timing is not None:
            return timing
        lead += 1  # a chunk's extra forward was the last one, leaving the chunk empty: start one further ahead
    return None


def _chunks(lead: int, forwards: int, need: np.ndarray, chunk: int):
    """:func:`_timing`'s chunks after ``lead`` forwards (``lead`` keeps up: :func:`_least_lead`), or ``None``
    where a chunk's extra forward would be the stream's last and leave the chunk without an iteration."""
    n = len(need)
    done, j, extra, sizes = lead, 0, [], []
    done_before = np.full(n, forwards, np.int64)
    while done < forwards and j < n:
        width = min(chunk, n - j)
        lag = max(int(np.max(need[j : j + width] - (done + np.arange(width)))), 0)  # forwards missing
        assert lag <= 1, "_least_lead's lead-in falls behind"
        done += lag
        size = min(chunk, forwards - done, n - j)  # iterations of this chunk: a backward, then a forward
        if size == 0:
            return None
        done_before[j : j + size] = done + np.arange(size)
        extra.append(lag)
        sizes.append(size)
        done += size
        j += size
        if size < chunk:
            break
    remainder = sizes[-1] if sizes and sizes[-1] < chunk else 0
    return lead, len(sizes) - (remainder > 0), remainder, np.array(extra, np.int32), done_before


def _least_lead(forwards: int, need: np.ndarray, chunk: int) -> int | None:
    """The least lead-in with which the chunks of :func:`_timing` keep up, or ``None``.

    A chunk ``c`` (backward steps ``j_c ..``) starts ``D_c`` forwards ahead of its first backward step; it needs
    ``g_c = max_k (need[j_c + k] - k) - j_c`` and may add one extra forward, so ``D_{c+1} = max(D_c, g_c)``, which
    fails where ``g_c > D_c + 1``. Hence ``D_c = max(lead, g_0, .., g_{c-1})``, and a lead-in works if every chunk
    started before all forwards are done keeps up, and all forwards are done by the last backward step: a
    condition monotone in the lead-in, searched by bisection with numpy.
    """
    n = len(need)
    starts = np.arange(0, n, chunk)
    within = np.arange(n) - np.repeat(starts, chunk)[:n]
    gap = np.maximum.reduceat(need - within, starts) - starts
    ahead = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(gap)[:-1]])  # max g before chunk c

    def works(lead: int) -> bool:
        d = np.maximum(lead, ahead)
        started = starts + d < forwards
        if np.any(started & (gap > d + 1)):
            return False
        return not started[-1] or n + max(lead, int(gap.max())) >= forwards

    # No lead-in shorter than this works: chunk c adds at most one forward (gap[c] <= lead + c + 1).
    lo, hi = max(int(need[0]), int(np.max(gap - np.arange(len(gap)) - 1))), forwards
    if lo > hi or not works(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid + 1, hi)
    return lo


def _place(schedule, forward_step, restore_kind, restore_source, kept, hidden, internal, done_before):
    """Place every stored item by simulating the pipeline in program order.

    Hidden states go to the bottom of the stack in order of position (the backward sweep frees them from the
    latest down, so their region shrinks from the top); internal states, all of one size, to slots counted
    down from the top of the stack, each new one in the lowest free slot. The stack is as high as the largest
    sum, over the run, of the hidden region and the internal slots in use.

    Returns ``(hidden_offset, internal_offset, restore_offset, forward_offset, backward_offset, peak)`` (the
    first two map a first-sweep position or step to its new offset).
    """
    t, s, i = schedule.length, schedule.hidden_quanta, schedule.internal_quanta
    positions = sorted(a for a in hidden if a > 0)
    hidden_offset = {a: rank * s for rank, a in enumerate(positions)}
    rank_of_source = {hidden[a]: rank for rank, a in enumerate(positions)}
    dead = [False] * len(positions)
    hidden_count = len(positions)  # 1 + the highest rank of a live hidden state: their region is that many
    slots = _Slots()
    slot_of = [-1] * (t + 1)  # step -> internal slot of its stored internal state
    for k in sorted(internal):
        slot_of[k] = slots.take()
    first_sweep_slots = {k: slot_of[k] for k in internal}
    kinds, sources, steps, kept = (column.tolist() for column in (restore_kind, restore_source, forward_step, kept))
    last_restore = {}
    for j, (kind, source) in enumerate(zip(kinds, sources)):
        if kind == LOAD_HIDDEN:
            last_restore[source] = j
    forwards = len(steps)
    forward_slot = [0] * forwards
    restore_slot = [-1] * forwards  # internal slot, or -1 for a hidden state
    restore_hidden = [0] * forwards
    backward_slot = [0] * (t - 1)
    peak = hidden_count * s + slots.extent * i
    backwards_before = _backwards_before(done_before, forwards).tolist()
    b = 0
    for j in range(forwards):
        while b < backwards_before[j]:
            backward_slot[b] = slot = slot_of[t - 1 - b]
            slots.free(slot)
            b += 1
        kind = kinds[j]
        if kind == LOAD_HIDDEN:
            source = sources[j]
            rank = rank_of_source[source]
            restore_hidden[j] = rank * s
            if last_restore[source] == j:
                dead[rank] = True
                while hidden_count and dead[hidden_count - 1]:
                    hidden_count -= 1
        elif kind == LOAD_INTERNAL:
            restore_slot[j] = slot_of[steps[j] - 1]
        elif kind == KEEP:  # the carry part of the previous forward's internal state, written just before
            if j == 0:
                return None  # pragma: no cover - the sweep starts with a restore
            restore_slot[j] = forward_slot[j - 1]
        else:
            restore_hidden[j] = -1  # the initial carry's slot, above the stack: placed below
        forward_slot[j] = slot = slots.take()
        peak = max(peak, hidden_count * s + slots.extent * i)
        if kept[j]:
            slot_of[steps[j]] = slot
        else:  # written and never read: the slot is free again for the next forward
            slots.free(slot)
    while b < t - 1:
        backward_slot[b] = slot_of[t - 1 - b]
        slots.free(backward_slot[b])
        b += 1
    forward_slot, restore_slot, restore_hidden, backward_slot = (
        np.array(column, np.int64) for column in (forward_slot, restore_slot, restore_hidden, backward_slot)
    )
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
