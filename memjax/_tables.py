"""The schedule as integer tables for the row interpreter (:class:`memjax._interpreter.Interpreter`); pure numpy.

The interpreter runs the forward sweep as one loop over the steps, with two ``lax.cond`` per step (store a hidden
state, store an internal state), and the backward sweep as one loop over rows, one row per action and step, each
row seven ``lax.cond`` (one per kind of action). :attr:`Tables.conditionals` counts them per gradient.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memjax._runs import Runs
from memjax._schedule import Op, Schedule

__all__ = ["Tables", "compile_tables", "CONDS_PER_ROW", "CONDS_PER_FORWARD_STEP"]

CONDS_PER_ROW = 7
MAX_ROWS = (1 << 31) - 1  # the loop's int32 row counter; a schedule this long would take days to run
# Beyond this many rows per action (advances of many steps: small budgets), the tables are built as runs.
DENSE_ROWS_PER_ACTION = 4
CONDS_PER_FORWARD_STEP = 2


@dataclasses.dataclass(frozen=True)
class Tables:
    """The schedule as integer tables for the executor (offsets in quanta, -1 for none).

    Forward sweep, one entry per step ``k = 1..t``: ``save_hidden[k-1]`` is where ``h_{k-1}`` goes before step
    ``k``, ``save_internal[k-1]`` where ``I_k`` goes. Backward sweep: the schedule's actions after the first
    backward step, one row per action and step: ``ADVANCE`` from ``a`` to ``b`` becomes ``b - a`` rows that each
    run one step (``start`` is the position before it), ``FREE`` is dropped (it only matters to the
    accounting), and restoring the initial carry is coded as ``RESTORE_HIDDEN`` with offset -1. Where advances
    are long (more than ``DENSE_ROWS_PER_ACTION`` rows per action), ``op``, ``start`` and ``offset`` are
    :class:`memjax._runs.Runs`, a run per action, so that planning and the program grow with the actions.
    """

    save_hidden: np.ndarray
    save_internal: np.ndarray
    op: np.ndarray | Runs
    start: np.ndarray | Runs
    offset: np.ndarray | Runs

    @property
    def rows(self) -> int:
        return int(self.op.shape[0])

    @property
    def conditionals(self) -> int:
        """Conditionals the interpreter evaluates per gradient (steps ``1..t-1`` of the forward sweep, rows)."""
        return CONDS_PER_FORWARD_STEP * max(len(self.save_hidden) - 1, 0) + CONDS_PER_ROW * self.rows


def compile_tables(schedule: Schedule) -> Tables:
    t = schedule.length
    first = schedule.first_backward
    save_hidden = np.full(t, -1, np.int32)
    save_internal = np.full(t, -1, np.int32)
    op, start, stop, offset = (
        column[:first] for column in (schedule.op, schedule.start, schedule.stop, schedule.offset)
    )
    hidden, internal = op == Op.SAVE_HIDDEN, op == Op.SAVE_INTERNAL
    save_hidden[start[hidden]] = offset[hidden]  # a valid first sweep stores each position once
    save_internal[start[internal]] = offset[internal]
    moves = np.flatnonzero((op == Op.ADVANCE) | internal)  # the register after the sweep: where the last move left it
    position = 0 if not moves.size else int(stop[moves[-1]])
    if position != t - 1 or (schedule.op[first], schedule.start[first]) != (Op.BACKWARD, t - 1):
        raise AssertionError("a schedule's first sweep must end by back-propagating the last step")  # pragma: no cover
    rest = slice(first + 1, None)
    op, start, stop, offset = (column[rest] for column in (schedule.op, schedule.start, schedule.stop, schedule.offset))
    keep = op != Op.FREE
    op, start, stop, offset = op[keep], start[keep], stop[keep], offset[keep]
    # One row per step of an ADVANCE: its row repeated (b - a) times, with start a, a + 1, ..., b - 1.
    repeats = np.where(op == Op.ADVANCE, stop - start, 1).astype(np.int64)
    rows = int(repeats.sum())
    if rows > MAX_ROWS:
        raise ValueError(
            f"this schedule makes {schedule.forward_count:,} forward evaluations over {t:,} steps "
            f"({schedule.forward_count / t:,.0f} per step): the interpreter would need {rows:,} rows, "
            f"more than {MAX_ROWS:,}. Give the scan more memory (memjax.explain shows forwards per step by budget)."
        )
    if rows > DENSE_ROWS_PER_ACTION * max(len(op), 1):
        # Long advances (small budgets): each action is one run of rows (memjax._runs), never expanded.
        rows_of = repeats > 0  # an empty advance would be an empty run
        op, start, offset, repeats = op[rows_of], start[rows_of], offset[rows_of], repeats[rows_of]
        first_row = np.cumsum(repeats) - repeats
        advance = (op == Op.ADVANCE).astype(np.int64)  # start moves by one per row of an advance; nothing else moves

        def runs(values, steps):
            return Runs(first_row, values[:, None].astype(np.int64), steps[:, None], (rows,), np.dtype(np.int32))

        still = np.zeros_like(advance)
        return Tables(save_hidden, save_internal, runs(op, still), runs(start, advance), runs(offset, still))
    first_of_row = np.repeat(np.cumsum(repeats) - repeats, repeats)
    within = np.arange(rows) - first_of_row
    op, start, offset = (np.repeat(column, repeats) for column in (op, start, offset))
    start = (start + within).astype(np.int32)
    return Tables(save_hidden, save_internal, op.astype(np.int32), start, offset.astype(np.int32))
