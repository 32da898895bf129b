"""A time model for schedules: the costs of one step's actions, and the seconds a schedule takes under them.

Forward counts are the paper's objective; wall-clock also depends on what a stored state costs to write and
read, and on the executor's per-action overhead. With per-step costs

* ``forward``: one plain step, ``forward_vjp``: one step under ``jax.vjp`` (residuals produced),
  ``backward``: one pullback, ``byte``: moving one byte to or from the pools, ``action``: one table row,

a schedule with ``F`` plain forwards (all forwards but the ``t`` made under ``jax.vjp``), ``t`` VJP forwards
and backward steps, ``n_i`` internal and ``n_h`` hidden stores and ``R`` rows is predicted to take

    F * forward + t * (forward_vjp + backward) + bytes_moved * byte + R * action

The model is pure numpy (it is part of :mod:`memjax.planning`). The costs of a real step come from
:func:`memjax.estimate_step_costs` (:mod:`memjax._measure`), which derives them from XLA's cost analysis (flops
and bytes accessed of the compiled step, its VJP and its pullback) and the backend's nominal throughput;
``calibrate=True`` times them instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memjax._schedule import Op, Schedule

__all__ = ["StepCosts", "predict_seconds"]


@dataclasses.dataclass(frozen=True)
class StepCosts:
    """Seconds per action of one step (see the module docstring)."""

    forward: float
    forward_vjp: float
    backward: float
    byte: float
    action: float


def predict_seconds(
    schedule: Schedule | None, costs: StepCosts, carry_bytes: int, internal_bytes: int, length: int | None = None
) -> float:
    """Predicted seconds of a schedule's forward and backward sweeps under ``costs``.

    ``schedule=None`` is standard BPTT over ``length`` steps (``jax.lax.scan``): ``length`` VJP forwards and
    backward steps, every internal state but the last written and read once, and no executor rows.
    """
    if schedule is None:
        return float(
            length * (costs.forward_vjp + costs.backward) + 2 * max(length - 1, 0) * internal_bytes * costs.byte
        )
    ops = np.bincount(np.asarray(schedule.op), minlength=len(Op))
    t = schedule.length
    vjp_forwards = ops[Op.SAVE_INTERNAL] + ops[Op.BACKWARD]  # each step's residuals are made exactly once
    plain = schedule.forward_count - vjp_forwards
    moved = (
        (ops[Op.SAVE_HIDDEN] + ops[Op.RESTORE_HIDDEN]) * carry_bytes
        + (ops[Op.SAVE_INTERNAL] + ops[Op.BACKWARD_STORED]) * internal_bytes
        + ops[Op.RESTORE_INTERNAL] * carry_bytes
    )
    rows = len(schedule) - ops[Op.FREE]
    return float(
        plain * costs.forward
        + vjp_forwards * costs.forward_vjp
        + t * costs.backward
        + moved * costs.byte
        + rows * costs.action
    )
