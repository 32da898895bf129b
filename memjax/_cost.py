"""A time model for schedules: per-action costs of one step, estimated by XLA or measured, and predictions.

Forward counts are the paper's objective; wall-clock also depends on what a stored state costs to write and
read, and on the executor's per-action overhead. With per-step costs

* ``forward``: one plain step, ``forward_vjp``: one step under ``jax.vjp`` (residuals produced),
  ``backward``: one pullback, ``byte``: moving one byte to or from the pools, ``action``: one table row,

a schedule with ``F`` plain forwards (all forwards but the ``t`` made under ``jax.vjp``), ``t`` VJP forwards
and backward steps, ``n_i`` internal and ``n_h`` hidden stores and ``R`` rows is predicted to take

    F * forward + t * (forward_vjp + backward) + bytes_moved * byte + R * action

:func:`estimate_step_costs` derives the costs from XLA's cost analysis (flops and bytes accessed of the compiled
step, its VJP and its pullback) and the backend's nominal throughput; ``calibrate=True`` times them instead.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from memjax._schedule import Op, Schedule

__all__ = ["StepCosts", "estimate_step_costs", "predict_seconds"]

# Nominal throughput per backend: (flop/s, byte/s, seconds per executor row). Only ratios matter for choosing.
_NOMINAL = {"cpu": (5e10, 1e10, 2e-6), "gpu": (5e13, 2e12, 1e-5), "tpu": (1e14, 1e12, 1e-5)}


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


def estimate_step_costs(step, consts, carry, x, *, calibrate: bool = False, repeats: int = 5) -> StepCosts:
    """Per-action costs of ``step(consts, carry, x) -> (carry, y)``.

    Args:
      step: the closure-converted step.
      consts, carry, x: example arguments (concrete arrays when ``calibrate``).
      calibrate: time the compiled step, VJP and pullback (median of ``repeats``) instead of estimating from
        XLA's cost analysis.
    """
    backend = jax.default_backend()
    flops_per_s, bytes_per_s, per_action = _NOMINAL.get(backend, _NOMINAL["cpu"])

    def forward(consts, carry, x):
        return step(consts, carry, x)

    def forward_vjp(consts, carry, x):
        out, pullback = jax.vjp(step, consts, carry, x)
        return out, jax.tree_util.tree_leaves(pullback)

    def backward(consts, carry, x, ct):
        _, pullback = jax.vjp(step, consts, carry, x)
        return pullback(ct)

    ct = jax.eval_shape(step, consts, carry, x)
    ct = jax.tree_util.tree_map(
        lambda a: (
            np.ones(a.shape, a.dtype) if np.issubdtype(a.dtype, np.inexact) else np.zeros(a.shape, jax.dtypes.float0)
        ),
        ct,
    )
    calls = [(forward, (consts, carry, x)), (forward_vjp, (consts, carry, x)), (backward, (consts, carry, x, ct))]
    seconds = []
    for fn, args in calls:
        compiled = jax.jit(fn).lower(*args).compile()
        if calibrate:
            jax.block_until_ready(compiled(*args))
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                times.append(time.perf_counter() - start)
            seconds.append(float(np.median(times)))
        else:
            analysis = compiled.cost_analysis()
            analysis = analysis[0] if isinstance(analysis, (list, tuple)) else (analysis or {})
            flops = float(analysis.get("flops", 0.0))
            moved = float(analysis.get("bytes accessed", 0.0))
            seconds.append(flops / flops_per_s + moved / bytes_per_s)
    fwd, fwd_vjp, bwd = seconds
    # A pullback recomputes nothing: what the VJP forward costs beyond the forward is residual traffic.
    return StepCosts(
        forward=fwd,
        forward_vjp=max(fwd_vjp, fwd),
        backward=max(bwd - fwd_vjp, 0.0),
        byte=2.0 / bytes_per_s,
        action=per_action,
    )
