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

from memjax._columns import _HIDDEN, _INTERNAL, _SPENT
from memjax._schedule import Op, Schedule

__all__ = ["Decide", "emit_schedule"]

# A decision for the segment (a, b] given q quanta and whether its start is a freeable hidden checkpoint:
# (what to store, split y); the codes of memjax._columns.
Decide = Callable[[int, int, int, bool], "tuple[int, int]"]


def emit_schedule(t: int, s: int, i: int, budget: int, decide: Decide) -> Schedule:
    """Flatten the policy ``decide`` for ``t`` steps within ``budget`` quanta into a :class:`Schedule`.

    Runs iteratively with an explicit task stack, so the depth of the recursion is not limited by Python's. A
    sub-problem whose start is a hidden checkpoint pushed by an ancestor (never ``h_0``, never a start inside an
    internal state) is *freeable*: its decisions come from the table ``F``, and its spent option restores the
    start, frees it and stores ``I_{a+1}`` at the start's offset; the ancestor's own free of that checkpoint is
    then skipped. Peephole: a ``SAVE_HIDDEN`` immediately followed by a ``FREE`` of the same offset (a checkpoint
    spent right after it was stored, which ties with storing the internal state directly) is dropped, so the
    first sweep never stores a state that it frees at once.
    """
    rows: list[tuple[int, int, int, int]] = []  # (op, start, stop, offset), one per action
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
        if task[0] == "backward_stored":
            _, position, offset = task
            rows.append((Op.BACKWARD_STORED, position, position, offset))
            continue
        _, a, b, q, restore, source, start_spent = task
        steps = b - a
        if steps == 0:
            continue

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
            for k in range(b, a, -1):
                advance_to(k - 1)
                rows.append((Op.BACKWARD, k - 1, k, -1))
                register = None
    op, start, stop, offset = (np.array(column, dtype=np.int32) for column in zip(*rows))
    return Schedule(t, op, start, stop, offset, s, i)
