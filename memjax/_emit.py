"""A policy's recursion flattened into a static :class:`~memjax._schedule.Schedule` (pure Python and numpy).

A policy is a function ``decide(a, b, q, freeable) -> (option, split)``: for the sub-problem of steps ``a + 1 ..
b`` with ``q`` quanta, whose start ``h_a`` may be freed (``freeable``) or not, what to store and where
(``docs/solver.md``, "Executing a policy"). :func:`emit_schedule` runs the recursion once, symbolically, and
writes down every action.

Notation (``docs/conventions.md``): ``s`` and ``i`` are the quanta of a hidden and of an internal state, ``q`` a
budget in quanta; positions are step counts (``h_k`` is the carry after ``k`` steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memjax._caches import cached
from memjax._closed_forms import _binomial_unit_chain
from memjax._columns import _HIDDEN, _INTERNAL, _SPENT
from memjax._schedule import Op, Schedule

__all__ = ["Decide", "emit_schedule"]

# A decision for the segment (a, b] given q quanta and whether its start is a freeable hidden checkpoint:
# (what to store, split y); the codes of memjax._columns.
Decide = Callable[[int, int, int, bool], "tuple[int, int]"]


def emit_schedule(
    t: int,
    s: int,
    i: int,
    budget: int,
    decide: Decide,
    binomial: bool = False,
    runs: bool = True,
    by_length: bool = False,
) -> Schedule:
    """Flatten the policy ``decide`` for ``t`` steps within ``budget`` quanta into a :class:`Schedule`.

    Runs iteratively with an explicit task stack, so the depth of the recursion is not limited by Python's. A
    sub-problem whose start is a hidden checkpoint pushed by an ancestor (never ``h_0``, never a start inside an
    internal state) is *freeable*: its decisions come from the table ``F``, and its spent option restores the
    start, frees it and stores ``I_{a+1}`` at the start's offset; the ancestor's own free of that checkpoint is
    then skipped. Peephole: a ``SAVE_HIDDEN`` immediately followed by a ``FREE`` of the same offset (a checkpoint
    spent right after it was stored, which ties with storing the internal state directly) is dropped, so the
    first sweep never stores a state that it frees at once.

    With ``runs``, a sub-problem whose every state fits is written at once with numpy, without a Python iteration
    per step: the same actions as the recursion writes one by one (``runs=False``; tests compare both). Where
    every internal state fits, every decision below stores the next one (fact 1: :func:`_store_every_internal`);
    where every hidden state fits, so do those of ``binomial`` policies (HSM, fact 3:
    :func:`_store_every_hidden`), but not MSM's, which breaks ties towards storing nothing. A policy that decides
    by a sub-problem's length and budget alone and never spends its start (``by_length``: binomial and ISM
    policies) has each sub-problem of a new (length, budget) kept as it is written and copied, shifted, wherever
    that pair recurs (:class:`_Block`): at 10^6 steps and 8 slots, 3.6 million actions from a few hundred
    distinct sub-problems. ``binomial`` implies ``by_length``.
    """
    by_length = by_length or binomial
    parts: list[np.ndarray] = []  # blocks of rows already written, in order
    rows: list[tuple[int, int, int, int]] = []  # (op, start, stop, offset), one per action, after the parts
    register = 0  # the position whose hidden state the register holds, None when it holds nothing usable
    stack_top = 0  # quanta in use on the stack (the initial state lives outside it)
    # Tasks, last pushed first run:
    #   ("solve", a, b, q, restore, source, start_spent): back-propagate steps a + 1 .. b with q quanta from the
    #     start h_a, restored by the op ``restore`` from offset ``source``. start_spent is None for a start that
    #     cannot be freed, else the one-element list it shares with the ancestor's "free" task of that
    #     checkpoint, set to True once the start was spent;
    #   ("free", offset, size, start_spent): free the item at offset, unless start_spent says it was spent;
    #   ("backward_stored", position, offset): back-propagate step ``position`` from the internal state there.
    tasks: list[tuple] = [("solve", 0, t, budget, Op.RESTORE_HIDDEN, -1, None)]
    # A by_length policy's sub-problem repeats its actions, shifted, wherever the same (length, budget) recurs:
    # each is written once and copied (``_Block``).
    blocks: dict[tuple[int, int, bool], _Block] = {}
    kept_rows = written = 0  # rows in kept blocks, rows in parts

    def write(part):
        nonlocal written
        parts.append(part)
        written += len(part)

    def flush():
        if rows:
            write(np.array(rows, np.int32).reshape(-1, 4))
            rows.clear()

    def free(offset, size):
        nonlocal stack_top
        last = rows[-1] if rows else None
        if last is not None and last[0] == Op.SAVE_HIDDEN and last[3] == offset and size == s:
            rows.pop()  # stored and freed at once: neither is needed
        else:
            rows.append((Op.FREE, 0, size, offset))
        stack_top -= size

    while tasks:
        task = tasks.pop()
        if task[0] == "free":
            _, offset, size, start_spent = task
            if start_spent is None or not start_spent[0]:
                free(offset, size)
            continue
        if task[0] == "rows":  # the back half of a chain of unit splits (_unit_chain)
            _, block, freed = task
            flush()
            write(block)
            stack_top -= freed
            register = None
            continue
        if task[0] == "backward_stored":
            _, position, offset = task
            rows.append((Op.BACKWARD_STORED, position, position, offset))
            continue
        if task[0] == "block":  # the end of a sub-problem written for the first time: keep it if small
            _, key, first_part, first_row, a, top = task
            flush()
            size = written - first_row
            if size <= _BLOCK_ROWS and kept_rows + size <= _BLOCKS_ROWS:
                blocks[key] = _Block(np.concatenate(parts[first_part:]), a, top)
                kept_rows += size
            continue
        _, a, b, q, restore, source, start_spent = task
        steps = b - a
        if steps == 0:
            continue
        if runs and by_length and 2 < steps <= _BLOCK_ROWS:  # a sub-problem of more steps has more actions
            key = (steps, q, register == a)
            flush()
            if key in blocks:
                write(blocks[key].at(a, stack_top, restore, source))
                register = None
                continue
            tasks.append(("block", key, len(parts), written, a, stack_top))

        def advance_to(position, start=a, restore=restore, source=source):
            """Bring the register to ``h_position``: restore the start if needed, then run the steps between."""
            nonlocal register
            if register != start:
                rows.append((restore, start, start, source))
            if position > start:
                rows.append((Op.ADVANCE, start, position, -1))
            register = position

        if steps == 1:
            advance_to(a)
            rows.append((Op.BACKWARD, a, a + 1, -1))
            register = None
            continue
        option, y = decide(a, b, q, start_spent is not None)
        every_internal = option == _INTERNAL and y == 1 and q >= s + i * (steps - 1)
        every_hidden = binomial and option == _HIDDEN and y == 1 and q >= s * (steps - 1)
        if runs and (every_internal or every_hidden):
            if register != a:
                rows.append((restore, a, a, source))
            flush()
            if every_internal:
                write(_store_every_internal(a, b, stack_top, i))
            else:
                write(_store_every_hidden(a, b, stack_top, s, restore, source, last=q >= s * steps))
            register = None
            continue
        chain = _binomial_unit_chain(steps, q, s) if runs and binomial and option == _HIDDEN and y == 1 else 0
        if chain >= 2:  # h_{a+1} .. h_{a+chain} stored one step apart: the recursion's actions, written at once
            if register != a:
                rows.append((restore, a, a, source))
            flush()
            forward, back = _unit_chain(a, chain, stack_top, s, restore, source)
            write(forward)
            tasks += [
                ("rows", back, chain * s),
                ("solve", a + chain, b, q - chain * s, Op.RESTORE_HIDDEN, stack_top + (chain - 1) * s, [False]),
            ]
            register, stack_top = a + chain, stack_top + chain * s
            continue
        if option == _HIDDEN:
            advance_to(a + y)
            rows.append((Op.SAVE_HIDDEN, a + y, a + y, stack_top))
            checkpoint_spent = [False]
            tasks += [
                ("solve", a, a + y, q, restore, source, start_spent),
                ("free", stack_top, s, checkpoint_spent),
                ("solve", a + y, b, q - s, Op.RESTORE_HIDDEN, stack_top, checkpoint_spent),
            ]
            stack_top += s
        elif option == _INTERNAL and y < steps:
            advance_to(a + y - 1)
            rows.append((Op.SAVE_INTERNAL, a + y - 1, a + y, stack_top))
            register = a + y
            tasks += [
                ("solve", a, a + y - 1, q, restore, source, start_spent),
                ("free", stack_top, i, None),
                ("backward_stored", a + y, stack_top),
                ("solve", a + y, b, q - i, Op.RESTORE_INTERNAL, stack_top, None),
            ]
            stack_top += i
        elif option == _SPENT:  # the start h_a is loaded for the last time: free it, store I_{a+1} in its place
            if start_spent is None or stack_top != source + s:
                raise AssertionError("spent option on a start that is not the freeable top of the stack")
            advance_to(a)
            free(source, s)
            start_spent[0] = True
            rows.append((Op.SAVE_INTERNAL, a, a + 1, source))
            register = a + 1
            tasks += [
                ("free", source, i, None),
                ("backward_stored", a + 1, source),
                ("solve", a + 1, b, q - i + s, Op.RESTORE_INTERNAL, source, None),
            ]
            stack_top = source + i
        else:  # store nothing: re-advance from the start for every step, last step first
            advance_to(b - 1)
            rows.append((Op.BACKWARD, b - 1, b, -1))
            register = None
            if runs:
                flush()
                write(_store_nothing(a, b - 1, restore, source))
            else:
                for k in range(b - 1, a, -1):
                    advance_to(k - 1)
                    rows.append((Op.BACKWARD, k - 1, k, -1))
    table = np.concatenate([*parts, np.array(rows, np.int32).reshape(-1, 4)])
    return Schedule._emitted(t, *table.T, s, i)


# Blocks are kept up to this many actions each and in all (16 bytes an action): small sub-problems recur most, and
# one kept block per distinct (length, budget) would hold quadratically many actions where few slots make most
# lengths distinct.
_BLOCK_ROWS = 1 << 14
_BLOCKS_ROWS = 1 << 20


class _Block:
    """The actions of a ``by_length`` policy's sub-problem ``(a, b]`` whose stack starts at ``top``, to be written again
    for another sub-problem of the same length and budget: positions shift with the start, stack offsets with the
    top, and the restores of the start ``h_a`` take the new sub-problem's own restore and source."""

    def __init__(self, rows: np.ndarray, a: int, top: int):
        self.rows, self.a, self.top = rows, a, top
        op = rows[:, 0]
        self.start_restore = ((op == Op.RESTORE_HIDDEN) | (op == Op.RESTORE_INTERNAL)) & (rows[:, 1] == a)
        self.positions = op != Op.FREE  # a FREE's start and stop hold 0 and its size
        self.offsets = (rows[:, 3] >= 0) & ~self.start_restore  # ADVANCE and BACKWARD hold -1

    def at(self, a: int, top: int, restore: int, source: int) -> np.ndarray:
        rows = self.rows.copy()
        rows[self.positions, 1:3] += a - self.a
        rows[self.offsets, 3] += top - self.top
        rows[self.start_restore] = (restore, a, a, source)
        return rows


def _unit_chain(a: int, n: int, top: int, size: int, restore: int, source: int) -> tuple[np.ndarray, np.ndarray]:
    """The actions of ``n`` nested hidden splits at 1 from ``h_a`` (the register there), the rest solved in between:
    ``(forward, back)``. Forward: advance one step at a time storing ``h_{a+1} .. h_{a+n}`` upwards from ``top``;
    back, after the rest: for ``j = n - 1 .. 0``, free ``h_{a+j+1}``, restore ``h_{a+j}`` (``h_a`` by ``restore``
    from ``source``) and back-propagate step ``a + j + 1``."""
    j = np.arange(n, dtype=np.int64)
    offsets = top + size * j
    advance = np.stack([np.full(n, Op.ADVANCE), a + j, a + j + 1, np.full(n, -1)], axis=1)
    save = np.stack([np.full(n, Op.SAVE_HIDDEN), a + j + 1, a + j + 1, offsets], axis=1)
    forward = np.stack([advance, save], axis=1).reshape(-1, 4)
    down = j[::-1]
    freed = np.stack([np.full(n, Op.FREE), np.zeros(n, np.int64), np.full(n, size), offsets[::-1]], axis=1)
    sources = np.where(down > 0, top + size * (down - 1), source)
    restores = np.stack([np.where(down > 0, Op.RESTORE_HIDDEN, restore), a + down, a + down, sources], axis=1)
    backward = np.stack([np.full(n, Op.BACKWARD), a + down, a + down + 1, np.full(n, -1)], axis=1)
    back = np.stack([freed, restores, backward], axis=1).reshape(-1, 4)
    return forward.astype(np.int32), back.astype(np.int32)


def _store_nothing(a: int, b: int, restore: int, source: int) -> np.ndarray:
    """Back-propagate steps ``b .. a + 1`` (``b > a``), last first, each after restoring ``h_a`` by ``restore``
    from ``source`` and advancing to the step before it."""
    k = np.arange(b, a, -1)  # the step back-propagated
    n = k.size
    restores = np.stack([np.full(n, restore), np.full(n, a), np.full(n, a), np.full(n, source)], axis=1)
    advances = np.stack([np.full(n, Op.ADVANCE), np.full(n, a), k - 1, np.full(n, -1)], axis=1)
    backward = np.stack([np.full(n, Op.BACKWARD), k - 1, k, np.full(n, -1)], axis=1)
    rows = np.stack([restores, advances, backward], axis=1).reshape(-1, 4)
    keep = np.ones(3 * n, bool)
    keep[3 * n - 2] = False  # step a + 1 needs no advance
    return rows[keep].astype(np.int32)


def _store_every_internal(a: int, b: int, top: int, size: int) -> np.ndarray:
    """The actions of sub-problem ``(a, b]`` (``b - a >= 2``) when every internal state fits, the register at
    ``h_a``: store ``I_{a+1} .. I_{b-1}`` upwards from ``top``, back-propagate step ``b`` from the register, then
    each stored step, freeing it."""
    n = b - a - 1
    k = np.arange(a, b - 1)  # SAVE_INTERNAL k stores I_{k+1}
    offsets = top + size * (k - a)
    first = np.stack([np.full(n, Op.SAVE_INTERNAL), k, k + 1, offsets], axis=1)
    last = np.array([[Op.BACKWARD, b - 1, b, -1]])
    down = k[::-1] + 1  # steps b - 1 .. a + 1
    stored = np.stack([np.full(n, Op.BACKWARD_STORED), down, down, offsets[::-1]], axis=1)
    freed = np.stack([np.full(n, Op.FREE), np.zeros(n, np.int64), np.full(n, size), offsets[::-1]], axis=1)
    return np.concatenate([first, last, np.stack([stored, freed], axis=1).reshape(-1, 4)]).astype(np.int32)


def _store_every_hidden(a: int, b: int, top: int, size: int, restore: int, source: int, last: bool) -> np.ndarray:
    """The actions of sub-problem ``(a, b]`` (``b - a >= 2``) when every hidden state fits, the register at
    ``h_a``: advance one step at a time storing ``h_{a+1} .. h_{b-1}`` upwards from ``top``, back-propagate step
    ``b`` from the register, then for each step below: free the state after it, restore the one before it (``h_a``
    by ``restore`` from ``source``) and back-propagate it.

    Without room for the ``last`` state ``h_{b-1}`` (one slot fewer: binomial checkpointing still stores every
    state but that one, which is in the register when step ``b`` is back-propagated), its save and free are left
    out. Binomial checkpointing writes many such runs of the same length: each is a shifted copy of one."""
    rows = _hidden_run(b - a, size, last) + np.array([0, a, a, top], np.int32)
    rows[rows[:, 0] == Op.ADVANCE, 3] = -1
    rows[rows[:, 0] == Op.BACKWARD, 3] = -1
    rows[rows[:, 0] == Op.FREE, 1:3] -= np.array([a, a], np.int32)
    rows[-2] = (restore, a, a, source)  # restoring h_a
    return rows


@cached(maxsize=1024)
def _hidden_run(steps: int, size: int, last: bool) -> np.ndarray:
    """:func:`_store_every_hidden` of ``(0, steps]`` from offset 0 (a read-only table: copy it to change it)."""
    n = steps - 1
    k = np.arange(n)  # ADVANCE k -> k + 1, then SAVE_HIDDEN h_{k+1}
    offsets = size * k
    advance = np.stack([np.full(n, Op.ADVANCE), k, k + 1, np.full(n, -1)], axis=1)
    save = np.stack([np.full(n, Op.SAVE_HIDDEN), k + 1, k + 1, offsets], axis=1)
    final = np.array([[Op.BACKWARD, steps - 1, steps, -1]])
    down = k[::-1] + 1  # h_{steps-1} .. h_1 are freed in turn
    freed = np.stack([np.full(n, Op.FREE), np.zeros(n, np.int64), np.full(n, size), offsets[::-1]], axis=1)
    sources = np.concatenate([offsets[::-1][1:], [0]])  # where h_{k-1} is restored from (h_0: set by the caller)
    restores = np.stack([np.full(n, Op.RESTORE_HIDDEN), down - 1, down - 1, sources], axis=1)
    backward = np.stack([np.full(n, Op.BACKWARD), down - 1, down, np.full(n, -1)], axis=1)
    sweep = np.stack([advance, save], axis=1).reshape(-1, 4)
    back = np.stack([freed, restores, backward], axis=1).reshape(-1, 4)
    if not last:
        sweep, back = sweep[:-1], back[1:]
    rows = np.concatenate([sweep, final, back]).astype(np.int32)
    rows.setflags(write=False)
    return rows
