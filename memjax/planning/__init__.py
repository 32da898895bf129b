"""Planning: the memory-optimal recomputation policies of backpropagation through time, and their schedules.

Pure numpy, no JAX: everything here imports and runs without JAX, to size a budget or study a policy before any
model exists. :func:`memjax.scan` plans with these same functions once it has measured a step.

* :func:`solve` gives the optimal :class:`Policy` of a kind (:data:`KINDS`) for ``length`` steps within a memory
  in hidden-state units (Gruslys et al., NeurIPS 2016); :func:`min_memory` answers the inverse question, the
  least memory for a number of forward evaluations; :func:`two_forward_policy` is ``memjax.scan``'s default
  (two forwards per step, about the least memory, no table); :func:`hsm_cost` is HSM's cost in closed form.
* ``Policy.schedule()`` flattens a policy into a :class:`Schedule`, the static list of actions (:class:`Op`)
  that :func:`memjax.scan` executes; :func:`simulate` replays one and checks what it holds, raising
  :class:`ScheduleError` on the first action that breaks a rule.
* :class:`StepCosts` and :func:`predict_seconds`: the time model with which ``kind="auto"`` ranks policies (the
  costs of a real step come from :func:`memjax.estimate_step_costs`, which needs JAX).

Example::

  import memjax.planning

  policy = memjax.planning.solve(1000, 98, alpha=5)   # length, memory in carry units, alpha
  print(policy.cost, policy.schedule().describe(max_actions=10))
"""

from memjax._cost import (
    StepCosts,
    predict_seconds,
)
from memjax._schedule import (
    Op,
    Schedule,
    ScheduleError,
    simulate,
)
from memjax._solver import (
    KINDS,
    Policy,
    hsm_cost,
    min_memory,
    solve,
    two_forward_policy,
)

__all__ = [
    "KINDS",
    "Op",
    "Policy",
    "Schedule",
    "ScheduleError",
    "StepCosts",
    "hsm_cost",
    "min_memory",
    "predict_seconds",
    "simulate",
    "solve",
    "two_forward_policy",
]
