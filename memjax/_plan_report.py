"""``python -m memjax plan``: a policy solved from a length and a memory budget, its cost, its peak memory and
an ASCII picture of its schedule.

This module imports no JAX (numpy, the solver and the planner's checks only), so that planning from the command
line starts in a fraction of a second and runs where JAX is not installed.
"""

from __future__ import annotations

import time

import numpy as np

from memjax._schedule import Op, Schedule
from memjax._solver import check_kind, min_memory, solve

__all__ = ["plan_report", "ascii_schedule", "parse_units"]


def parse_units(memory: str, length: int, alpha: float) -> float:
    """Memory in units of one hidden state.

    Args:
      memory: ``"40"`` (40 units) or ``"5%"`` (5% of store-all, which is ``1 + (length - 1) alpha`` units).
      length: steps ``t``.
      alpha: size of an internal state over a hidden state's.

    Returns:
      The memory in units, positive.

    Raises:
      ValueError: if ``memory`` does not parse or is not positive.
    """
    text = str(memory).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100 * (1 + (length - 1) * alpha)
        else:
            value = float(text)
    except ValueError:
        raise ValueError(
            f"memory={memory!r}: give units of one hidden state (e.g. '40') or a percentage of store-all (e.g. '5%')."
        ) from None
    if not value > 0:
        raise ValueError(f"memory={memory!r} must be positive.")
    return value


def plan_report(
    length: int, memory: str, alpha: float = 1.0, kind: str = "msm", width: int = 72, height: int = 20, actions: int = 0
) -> str:
    """The text that ``python -m memjax plan`` prints: policy, cost, peak memory and an ASCII schedule.

    Args:
      length: steps ``t``.
      memory: units of one hidden state (``"40"``) or a percentage of store-all (``"5%"``), see
        :func:`parse_units`.
      alpha: size of an internal state over a hidden state's.
      kind: one of :data:`memjax.planning.KINDS` (``"auto"`` needs a step to measure: :func:`memjax.plan_scan`).
      width, height: columns and rows of the picture (:func:`ascii_schedule`).
      actions: also list the first ``actions`` actions of the schedule.

    Returns:
      The report, lines joined by newlines.

    Raises:
      ValueError: for a memory that does not parse, a kind that is not a policy kind, or a memory below the
        least that ``kind`` needs (the solver's message).
    """
    check_kind(kind)
    store_all = 1 + (length - 1) * alpha
    units = parse_units(memory, length, alpha)
    start = time.perf_counter()
    policy = solve(length, units, alpha=alpha, kind=kind)
    schedule = policy.schedule()
    seconds = time.perf_counter() - start
    lines = [
        f"memjax plan: t = {length} steps, alpha = {alpha:g} (an internal state is {alpha:g} hidden-state units)",
        f"  policy         {kind}, memory {units:g} units ({units / store_all:.2%} of store-all = {store_all:g} units)",
        f"  cost           {policy.cost} forward evaluations = {policy.forwards_per_step:.3f} forwards per "
        f"step (store-all: 1.000; recompute-all: {(length + 1) / 2:g})",
        f"  peak memory    {schedule.peak_memory:g} units ({schedule.peak_memory / store_all:.2%} of "
        f"store-all): {schedule.hidden_slots} hidden + {schedule.internal_slots} internal states at most, "
        "plus the initial state",
        f"  schedule       {len(schedule)} actions, solved in {seconds:.2f} s",
    ]
    if kind not in ("store_all", "recompute"):
        others = []
        for other in ("msm", "hsm", "chen"):
            if other == kind or (other == "msm" and length > 3000):  # keep the report quick
                continue
            try:
                others.append(
                    f"{other} {solve(length, units, alpha=alpha, kind=other).forwards_per_step:.3f} forwards per step"
                )
            except ValueError:
                others.append(f"{other} needs more memory")
        if others:
            lines.append("  same memory    " + "; ".join(others))
        try:
            least = min_memory(length, 2 * length, alpha=alpha, kind=kind)
            lines.append(f"  2 fwd/step     needs {least:g} units ({least / store_all:.2%} of store-all) with {kind}")
        except ValueError:
            pass
    lines.append("")
    lines.append(ascii_schedule(schedule, width=width, height=height))
    if actions:
        lines.append("")
        lines.append(schedule.describe(max_actions=actions))
    return "\n".join(lines)


def ascii_schedule(schedule: Schedule, width: int = 72, height: int = 20) -> str:
    """A coarse picture of a schedule: time runs down (rows), positions 0..t run across (columns).

    Time counts forward evaluations and backward steps. In each cell the strongest mark wins: ``x`` a step was
    back-propagated there, ``#`` an internal state is held, ``o`` a hidden state is held, ``-`` forward steps
    were (re)computed there, ``.`` already back-propagated.

    Args:
      schedule: a flat schedule (``Policy.schedule()``).
      width, height: most columns and rows; fewer where the schedule has fewer positions or time units.

    Returns:
      The picture with its header, axis and legend, lines joined by newlines.
    """
    t = schedule.length
    columns = max(1, min(width, t))
    total = schedule.forward_count + t
    rows = max(1, min(height, total))
    grid = np.zeros((rows, columns), np.int8)  # 0 blank, 1 '.', 2 '-', 3 'o', 4 '#', 5 'x'
    marks = " .-o#x"

    def column(position: int) -> int:  # position k in 1..t (step k), 0 for the initial state
        return min(columns - 1, max(0, (position - 1) * columns // t))

    def row(clock: int) -> int:
        return min(rows - 1, clock * rows // total)

    def mark(r: int, c0: int, c1: int, value: int) -> None:
        grid[r, c0 : c1 + 1] = np.maximum(grid[r, c0 : c1 + 1], value)

    clock = 0
    held: dict[int, tuple[int, int, int]] = {}  # offset -> (position, mark, clock saved)
    spans = []  # (position, mark, clock from, clock to)
    done = []  # (position, clock)

    def forward(a: int, b: int) -> None:  # steps a+1..b, one clock tick each
        nonlocal clock
        k = a
        while k < b:
            r = row(clock)
            end_clock = -(-(r + 1) * total // rows)  # the first clock of the next row
            n = max(1, min(b - k, end_clock - clock))
            mark(r, column(k + 1), column(k + n), 2)
            k += n
            clock += n

    for op, a, b, off in zip(schedule.op, schedule.start, schedule.stop, schedule.offset):
        op, a, b, off = int(op), int(a), int(b), int(off)
        if op == Op.ADVANCE:
            forward(a, b)
        elif op == Op.SAVE_HIDDEN:
            held[off] = (a, 3, clock)
        elif op == Op.SAVE_INTERNAL:
            forward(a, a + 1)
            held[off] = (a + 1, 4, clock)
        elif op == Op.BACKWARD:
            forward(a, a + 1)
            done.append((a + 1, clock))
            clock += 1
        elif op == Op.BACKWARD_STORED:
            done.append((a, clock))
            clock += 1
        elif op == Op.FREE and off in held:
            position, value, since = held.pop(off)
            spans.append((position, value, since, clock))
    for position, value, since in held.values():
        spans.append((position, value, since, clock))
    for position, value, since, until in spans:
        for r in range(row(since), row(max(since, until - 1)) + 1):
            mark(r, column(position), column(position), value)
    last_done = np.full(columns, -1, np.int64)  # the last row in which each column saw a backward step
    for position, when in done:
        r, c = row(when), column(position)
        mark(r, c, c, 5)
        last_done[c] = max(last_done[c], r)
    for c in range(columns):  # '.' once every step of the column has been back-propagated
        if 0 <= last_done[c] < rows - 1:
            grid[last_done[c] + 1 :, c] = np.maximum(grid[last_done[c] + 1 :, c], 1)

    per_column = t / columns
    pad = max(4, len(str(total)))
    axis = "1" + "position".center(max(columns - 1 - len(str(t)), 0)) + str(t) if columns > 12 else "1..t"
    lines = [
        f"schedule picture: {rows} rows of ~{total / rows:.3g} time units (forward evaluations + backward "
        f"steps), {columns} columns of ~{per_column:.3g} positions",
        f"{'time':>{pad}} |{axis}",
        f"{'':>{pad}} +" + "-" * columns,
    ]
    for r in range(rows):
        lines.append(f"{r * total // rows:>{pad}} |" + "".join(marks[v] for v in grid[r]).rstrip())
    lines.append(
        "legend: '-' forward (re)computation, 'o' hidden state held, '#' internal state held, "
        "'x' back-propagated, '.' done"
    )
    return "\n".join(lines)
