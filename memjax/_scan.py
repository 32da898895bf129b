"""``memjax.scan``: ``jax.lax.scan`` whose gradient runs an optimal BPTT schedule inside a memory budget.

A call goes through three stages, each in its own module:

1. *Checks and closure conversion* (:mod:`memjax._checks`): the arguments pass ``jax.lax.scan``'s own checks;
   the step is closure-converted (closed-over arrays become explicit, differentiable arguments).
2. *Planning* (:mod:`memjax._plan`): the carry and VJP residuals are measured (:mod:`memjax._measure`), the
   budget is turned into hidden-state units and ``alpha``, and :func:`memjax.planning.solve` gives the policy.
3. *Execution* (:mod:`memjax._primitive`; :mod:`memjax._executor` and its two executors): a primitive whose
   reverse-mode rule runs the policy's schedule, and whose forward-mode, linearization and batching rules are
   ``lax.scan``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax._budget import Budget, parse_budget
from memjax._checks import check_arguments, closure_convert, example_arguments
from memjax._cost import predict_seconds
from memjax._interpreter import Interpreter
from memjax._keys import carry_keys_as_data, data_to_keys
from memjax._measure import StepSizes, estimate_step_costs, measure_step
from memjax._pipelined import Pipelined
from memjax._plan import SCAN_KINDS, ScanPlan, check_executor, plan, prefers_pipeline
from memjax._primitive import ScanPrimitive
from memjax._solver import check_kind

__all__ = ["scan", "plan_scan", "ScanPlan", "SCAN_KINDS"]


def plan_scan(
    f, init, xs=None, length=None, *, memory=None, kind: str = "msm", checkpoint_policy=None, executor: str = "auto"
) -> ScanPlan:
    """Decide how :func:`scan` will differentiate ``f`` over ``xs``: sizes, budget, policy and schedule.

    Arguments are those of :func:`scan`; nothing is run. See :func:`memjax.explain` for a readable report.
    """
    return prepare(f, init, xs, length, memory, kind, checkpoint_policy, executor=executor)[0]


def prepare(f, init, xs, length, memory, kind, checkpoint_policy=None, reverse=False, unroll=1, executor="auto"):
    """Check the arguments, closure-convert ``f`` and plan: ``(plan, step, consts, init, effects)``."""
    f, init, _ = carry_keys_as_data(f, init)  # a no-op when scan already did it
    check_kind(kind, SCAN_KINDS)
    check_executor(executor)
    budget = parse_budget(memory)
    init, length = check_arguments(f, init, xs, length, reverse, unroll)
    carry, x0 = example_arguments(init, xs, length)
    if checkpoint_policy is not None:  # an internal state holds only what the policy saves
        f = jax.checkpoint(f, policy=checkpoint_policy)
    step, consts, effects = closure_convert(f, carry, x0)
    sizes = measure_step(lambda p, c, x: step(c, x, *p), consts, carry, x0)
    pipelined = executor == "pipelined" or (executor == "auto" and prefers_pipeline(sizes, jax.default_backend()))
    if kind == "auto":
        return plan_fastest(length, sizes, budget, step, consts, carry, x0, pipelined), step, consts, init, effects
    return plan(length, kind, sizes, budget, pipelined), step, consts, init, effects


def scan(
    f: Callable,
    init,
    xs=None,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
    executor: str = "auto",
):
    """``jax.lax.scan`` with memory-efficient, exact gradients (Gruslys et al., 2016).

    Semantically (values, gradients, pytrees, ``reverse``, ``unroll``, error messages) this is
    ``jax.lax.scan``::

      def scan(f, init, xs, length=None, reverse=False):
        carry, ys = init, []
        for x in (reversed(xs) if reverse else xs):
          carry, y = f(carry, x)
          ys.append(y)
        return carry, stack(reversed(ys) if reverse else ys)

    What differs is only what reverse-mode differentiation stores and recomputes: instead of every step's
    residuals, it stores at most ``memory`` bytes of hidden states (carries) and internal states (residuals),
    chosen by the optimal policy of ``kind``, and recomputes the rest. Gradients flow to ``init``, ``xs`` and
    every array ``f`` closes over. Every transformation works: ``jax.grad`` and ``jax.vjp`` (the schedule),
    ``jax.jvp``, ``jax.linearize`` and ``jax.jacfwd`` (``lax.scan``'s tangent sweep, which stores nothing per
    step), second order in any combination (``jax.hessian``, ``jax.grad`` of ``jax.grad``), ``jax.vmap``,
    ``jax.jit``, ``jax.checkpoint`` and ``jax.shard_map``.

    Args:
      f, init, xs, length, reverse, unroll: as in ``jax.lax.scan``.
      memory: the budget for stored states, the initial carry included: an ``int`` of bytes, a string such as
        ``"64MiB"``, ``"1.5GB"`` or ``"5%"``, or a float in (0, 1], a fraction of what standard BPTT stores
        (``carry + (length - 1) * internal`` bytes). A relative budget below the least memory the policy can
        run with is raised to that least (:func:`memjax.explain` says so); a budget in bytes below it raises.
        ``None``: about the least memory whose schedule needs at most two forward evaluations per step (one
        extra forward pass), planned without a table (:func:`memjax.planning.two_forward_policy`: at most one
        hidden state above the exact least). The transient working set (one step's residuals, cotangent
        accumulators, the ``ys`` and ``xs``-cotangent buffers) is outside the budget; see
        :func:`memjax.explain`. Under ``jax.vmap`` the budget applies to each mapped element.
      kind: the policy: ``"msm"`` (default, optimal over hidden and internal states), ``"hsm"`` (hidden states
        only, i.e. binomial checkpointing), ``"ism"``, ``"chen"``, ``"store_all"`` (runs ``jax.lax.scan``
        itself, over ``jax.checkpoint(f, policy=checkpoint_policy)`` when a policy is given) or ``"recompute"``;
        or ``"auto"``: of msm, hsm, chen, ism and store_all, the one with the least predicted time within the
        budget, from per-step costs that XLA's cost analysis estimates (:mod:`memjax._cost`).
      checkpoint_policy: what an internal state holds. ``None``: every residual of the step's VJP. A
        ``jax.checkpoint`` policy (e.g. ``jax.checkpoint_policies.save_only_these_names("gates")`` with
        ``jax.ad_checkpoint.checkpoint_name`` in the step) keeps only what it saves and recomputes the rest
        inside each backward step: a smaller internal state, a smaller ``alpha``, and more internal states
        within the same budget.
      executor: how the backward sweep runs (:func:`memjax.explain` reports it). ``"pipelined"``: the schedule
        re-timed into one loop of uniform bodies, without a conditional, where the schedule allows it (not
        HSM's) and the budget holds the pipeline's few extra internal states; ``"interpreter"``: one row per
        action, seven conditionals per row. ``"auto"`` (default): pipelined on accelerators, where every
        conditional is a dispatch; on the CPU for carries up to 8 KiB, where dispatch costs more than the
        pipeline's extra memory traffic (see the README).

    Returns:
      ``(carry, ys)``, as ``jax.lax.scan``.

    Raises:
      ValueError: for a bad ``memory`` or ``kind``, or a budget in bytes below the least the policy can use
        (the message gives it in bytes).
      TypeError, ValueError: for every mistake ``jax.lax.scan`` diagnoses, with its exception and message.
    """
    f, init, key_impls = carry_keys_as_data(f, init)
    plan, step, consts, init, effects = prepare(
        f, init, xs, length, memory, kind, checkpoint_policy, reverse, unroll, executor
    )
    if plan.policy is None:  # store_all: lax.scan, whose residuals are the internal states measured
        body = f if checkpoint_policy is None else jax.checkpoint(f, policy=checkpoint_policy)
        carry, ys = jax.lax.scan(body, init, xs, plan.length, reverse=reverse, unroll=unroll)
    else:
        # The pipeline where the plan has one (loops of uniform bodies), the row interpreter otherwise.
        if plan.pipeline is not None:
            executor = Pipelined(step, plan, reverse, unroll, plan.pipeline)
        else:
            executor = Interpreter(step, plan, reverse, unroll)
        out = jax.eval_shape(executor.primal, consts, init, xs)
        carry, ys = ScanPrimitive(executor, consts, init, xs, out, effects)(consts, init, xs)
    return (carry if key_impls is None else data_to_keys(carry, key_impls)), ys


def plan_fastest(
    length: int, sizes: StepSizes, budget: Budget | None, step, consts, carry, x0, pipelined: bool = True
) -> ScanPlan:
    """``kind="auto"``: the candidate policy with the least predicted time within the budget."""
    if budget is None and length > 1:  # the default budget is the MSM default: at most 2 forwards per step
        budget = Budget("bytes", plan(length, "msm", sizes, None, pipelined).budget_bytes)
    avals = [jax.ShapeDtypeStruct(np.shape(c), jnp.result_type(c)) for c in consts]
    costs = estimate_step_costs(lambda p, c, x: step(c, x, *p), avals, carry, x0)
    plans = []
    for kind in ("msm", "hsm", "chen", "ism", "store_all"):
        try:
            candidate = plan(length, kind, sizes, budget, pipelined)
        except ValueError:
            continue  # below what this kind can work with
        if candidate.raised_to_least and kind != "msm":
            continue  # a relative budget raised for this kind is not within what was asked
        plans.append(
            (predict_seconds(candidate.schedule, costs, sizes.carry_bytes, sizes.internal_bytes, length), candidate)
        )
    if not plans:
        return plan(length, "msm", sizes, budget, pipelined)  # raises the error that names the least budget
    predictions = tuple((candidate.kind, candidate.forward_count, seconds) for seconds, candidate in plans)
    best = min(plans, key=lambda pair: pair[0])[1]
    return dataclasses.replace(best, predictions=predictions)
