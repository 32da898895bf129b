"""Integer tables kept as periodic arithmetic runs, so that a schedule embedded in a program grows with its runs
rather than its length (pure numpy; :func:`memjax._executor.loop` decodes them on the device).

A run of period ``P`` is a stretch of a table (read in row-major order) over which every ``P``-th entry moves by
a constant step, each phase by its own: entry ``k`` of the run is ``firsts[k % P] + steps[k % P] * (k // P)``.
Period 1 is an arithmetic run (a pipeline's steps and slots); period 2 also holds two interleaved ones, as the
interpreter's rows of binomial checkpointing alternate (save, advance; restore, back-propagate), which a period-1
encoding would cut at every entry.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Runs", "compact", "find_runs"]

PERIODS = (1, 2)


@dataclasses.dataclass(frozen=True, eq=False)
class Runs:
    """An integer table of ``shape`` (read in row-major order) as runs: entry ``starts[r] + k`` of run ``r`` is
    ``firsts[r, k % period] + steps[r, k % period] * (k // period)``, up to the next run's start (``starts`` rise
    strictly: no run is empty)."""

    starts: np.ndarray
    firsts: np.ndarray
    steps: np.ndarray
    shape: tuple
    dtype: np.dtype

    @property
    def period(self) -> int:
        return int(self.firsts.shape[1])

    @property
    def runs(self) -> int:
        return int(self.starts.shape[0])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes as embedded in a program (``int32`` starts, firsts and steps)."""
        return 4 * (self.starts.size + self.firsts.size + self.steps.size)

    def dense(self) -> np.ndarray:
        """The table itself."""
        lengths = np.diff(np.append(self.starts, self.size))
        run = np.repeat(np.arange(self.runs), lengths)
        k = np.arange(self.size) - self.starts[run]
        phase = k % self.period
        values = self.firsts[run, phase] + self.steps[run, phase] * (k // self.period)
        return values.astype(self.dtype).reshape(self.shape)


def find_runs(table: np.ndarray, period: int, max_runs: int | None = None) -> Runs | None:
    """``table`` as the fewest runs of ``period`` that a greedy pass finds (each run as long as it goes), or
    ``None`` if that takes more than ``max_runs``.

    A run starting at entry ``a`` is defined by its first ``2 * period`` entries and extends while
    ``v[e] - v[e - P] == v[e - P] - v[e - 2P]``; it ends at the first entry where that fails, where the next one
    starts.
    """
    table = np.asarray(table)
    v, p = table.astype(np.int64).reshape(-1), period
    n = v.size
    if n > 2 * p:
        lag = v[p:] - v[:-p]
        breaks = np.flatnonzero(lag[p:] != lag[:-p]) + 2 * p  # entries that do not continue the run of e - 2P
    else:
        breaks = np.zeros(0, np.int64)
    if max_runs is not None and breaks.size > 2 * p * max_runs:
        return None  # every run covers at most 2P breaks (its defining entries)
    starts, a = [0], 0
    while True:
        k = np.searchsorted(breaks, a + 2 * p)
        if k == breaks.size:
            break
        a = int(breaks[k])
        starts.append(a)
        if max_runs is not None and len(starts) > max_runs:
            return None
    starts = np.array(starts, np.int64)
    ends = np.append(starts[1:], n)
    phases = np.arange(p)
    firsts = v[np.minimum(starts[:, None] + phases, ends[:, None] - 1)]
    second = starts[:, None] + phases + p
    steps = np.where(second < ends[:, None], v[np.minimum(second, n - 1)] - firsts, 0)
    return Runs(starts, firsts, steps, table.shape, table.dtype)


def compact(table: np.ndarray, ratio: int = 4) -> Runs | None:
    """``table`` as the runs (of any period in ``PERIODS``) that take the fewest bytes, if they take at most
    ``1 / ratio`` of the table's; otherwise ``None`` (embed the table as it is)."""
    best = None
    for period in PERIODS:
        limit = table.nbytes // (ratio * 4 * (1 + 2 * period))  # runs whose bytes stay within the limit
        if best is not None:
            limit = min(limit, best.nbytes // (4 * (1 + 2 * period)))
        runs = find_runs(table, period, limit) if limit > 0 else None
        if runs is not None and (best is None or runs.nbytes < best.nbytes):
            best = runs
    return best
