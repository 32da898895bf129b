"""``memjax.explain``: what :func:`memjax.scan` will store and recompute, before running anything."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from memjax._budget import format_bytes
from memjax._measure import tree_bytes
from memjax._scan import ScanPlan, prepare
from memjax._solver import EXACT_LENGTH

__all__ = ["Explanation", "explain"]


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The trade :func:`memjax.scan` makes for one step function and budget. All sizes in bytes.

    Attributes:
      plan: the full :class:`memjax.ScanPlan` (policy, schedule, measured sizes).
      carry_bytes: one hidden state (the carry).
      internal_bytes: one stored internal state (the step's input-dependent VJP residuals, less those that are
        the step's ``x``, plus the carry).
      invariant_bytes: residuals that do not depend on the step's inputs, kept once.
      alpha: ``internal_bytes / carry_bytes``.
      stored_bytes: what the schedule stores at its peak, the initial carry included (within the budget).
      working_bytes: the transient working set outside the budget: one step's residuals, the stored item being
        saved or loaded, the carry cotangent and register, parameter-cotangent accumulators, and the ``ys`` and
        ``xs``-cotangent buffers. ``stored_bytes + working_bytes`` predicts XLA's temp memory for the gradient
        (``compiled.memory_analysis().temp_size_in_bytes``), less ``xs_cotangent_bytes`` where the gradient
        flows to ``xs`` and ``parameter_cotangent_bytes`` where it flows to the parameters the step closes
        over: those buffers are then the gradient's output (benchmarks/results/long_sequences.md).
      xs_cotangent_bytes: the ``xs``-cotangent buffer (as large as ``xs``), within ``working_bytes``.
      parameter_cotangent_bytes: the accumulators of the cotangents of the floating-point values the step
        closes over (its parameters), within ``working_bytes``.
      forwards_per_step: forward evaluations per step as executed (1 for standard BPTT); a pipelined
        executor may make a few more than the policy's ``cost``.
      executor: how the backward sweep runs: ``"lax.scan"``, ``"pipelined"`` (loops of uniform bodies) or
        ``"interpreter"`` (one row per action); see :mod:`memjax._executor`.
      conditionals: conditionals the gradient evaluates (each a dispatch on an accelerator); no loop of the
        executor has a dynamic trip count.
      store_all_bytes: what standard BPTT (``jax.lax.scan``) stores for the same step.
      title: what is explained (an adapter names its module), printed on the first line; ``None``: nothing.
    """

    plan: ScanPlan
    carry_bytes: int
    internal_bytes: int
    invariant_bytes: int
    alpha: float
    budget_bytes: int
    stored_bytes: int
    working_bytes: int
    xs_cotangent_bytes: int
    parameter_cotangent_bytes: int
    forwards_per_step: float
    store_all_bytes: int
    executor: str = "lax.scan"
    conditionals: int = 0
    title: str | None = None

    def __str__(self) -> str:
        plan = self.plan
        policy = plan.policy
        kind = plan.kind if policy is None else f"{policy.kind} (cost {policy.cost} forwards)"
        if policy is not None and not policy.optimal:
            why = f"beyond {EXACT_LENGTH:,} steps" if plan.length > EXACT_LENGTH else "for the default budget"
            kind += f"; closed form {why}, no table: the optimum is at least {policy.lower_bound}"
        rows = [
            ("length", f"{plan.length} steps"),
            ("carry (hidden state)", format_bytes(self.carry_bytes)),
            ("internal state", f"{format_bytes(self.internal_bytes)}  (alpha = {self.alpha:.3g})"),
            ("invariant residuals", f"{format_bytes(self.invariant_bytes)}  (stored once)"),
            ("policy", kind),
            (
                "budget",
                format_bytes(self.budget_bytes)
                + (
                    "  (raised to the least this kind needs: the relative budget asked for less)"
                    if plan.raised_to_least
                    else ""
                ),
            ),
            (
                "stored at peak",
                f"{format_bytes(self.stored_bytes)}  "
                f"({self.stored_bytes / max(self.store_all_bytes, 1):.1%} of store_all)",
            ),
            ("working set", format_bytes(self.working_bytes)),
            (
                "forwards per step",
                f"{self.forwards_per_step:.3f}"
                + (
                    f"  (the policy's own: {policy.cost / plan.length:.3f})"
                    if policy is not None and policy.cost != plan.forward_count
                    else ""
                ),
            ),
            ("executor", _EXECUTORS[self.executor].format(self.conditionals)),
            ("store_all (lax.scan)", f"{format_bytes(self.store_all_bytes)}, 1.000 forwards per step"),
        ]
        for kind, forwards, seconds in plan.predictions:
            rows.append(
                (f"auto: {kind}", f"{forwards / plan.length:.3f} forwards per step, predicted {seconds * 1e3:.3g} ms")
            )
        if policy is not None:
            schedule = plan.schedule
            rows.insert(6, ("policy slots", f"{schedule.hidden_slots} hidden + {schedule.internal_slots} internal"))
        width = max(len(name) for name, _ in rows)
        header = "memjax.explain" if self.title is None else f"memjax.explain: {self.title}"
        return header + "\n" + "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))


_EXECUTORS = {
    "lax.scan": "jax.lax.scan (stores every internal state)",
    "pipelined": "pipelined, {} conditionals per gradient",
    "interpreter": "interpreter (one row per action), {} conditionals per gradient",
}


def explain(
    f,
    init,
    xs=None,
    length=None,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
    executor: str = "auto",
    verbose: bool = True,
    title: str | None = None,
) -> Explanation:
    """Report what ``memjax.scan(f, init, xs, length, memory=..., kind=..., checkpoint_policy=...)`` will store
    and recompute (arguments as :func:`memjax.scan`).

    Nothing is run: the step is traced abstractly (``jax.eval_shape``, ``jax.make_jaxpr``) to measure the carry
    and its VJP residuals, and the policy is solved. Prints the report when ``verbose``, headed by ``title``
    (what is explained: the framework adapters name their module) when one is given.

    Returns:
      An :class:`Explanation` (its ``str`` is the printed table).
    """
    plan, _, consts, _, _ = prepare(f, init, xs, length, memory, kind, checkpoint_policy, executor=executor)
    sizes = plan.sizes
    step_bytes = sizes.residual_bytes + sizes.invariant_bytes
    if plan.policy is None:
        in_transit = 0  # lax.scan stores every residual itself
    elif plan.kind in ("hsm", "recompute"):
        in_transit = sizes.carry_bytes  # only hidden states are saved and loaded
    else:
        in_transit = max(sizes.carry_bytes, sizes.internal_bytes)
    ys_bytes = _ys_bytes(f, init, xs, plan.length)
    xs_bytes = tree_bytes(xs)
    working = step_bytes + in_transit + 3 * sizes.carry_bytes + tree_bytes(consts) + xs_bytes + ys_bytes
    explanation = Explanation(
        plan=plan,
        carry_bytes=sizes.carry_bytes,
        internal_bytes=sizes.internal_bytes,
        invariant_bytes=sizes.invariant_bytes,
        alpha=sizes.alpha,
        budget_bytes=plan.budget_bytes,
        stored_bytes=plan.stored_bytes,
        working_bytes=working,
        xs_cotangent_bytes=xs_bytes,
        parameter_cotangent_bytes=tree_bytes(
            [leaf for leaf in jax.tree_util.tree_leaves(consts) if np.issubdtype(leaf.dtype, np.inexact)]
        ),
        forwards_per_step=plan.forward_count / max(plan.length, 1),
        store_all_bytes=plan.store_all_bytes,
        executor=plan.executor,
        conditionals=plan.conditionals,
        title=title,
    )
    if verbose:
        print(explanation)
    return explanation


def _ys_bytes(f, init, xs, length) -> int:
    x0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), xs)
    _, y = jax.eval_shape(f, init, x0)
    return tree_bytes(y) * length
