"""memjax: memory-efficient backpropagation through time for JAX.

Replace ``jax.lax.scan`` with :func:`memjax.scan` and name a memory budget: values and gradients stay the same,
while the backward pass stores at most the budget and recomputes the least that the optimal policy of
Gruslys et al. (NeurIPS 2016) requires.
"""

from memjax._budget import format_bytes, parse_budget
from memjax._cost import StepCosts, estimate_step_costs, predict_seconds
from memjax._explain import Explanation, explain
from memjax._scan import SCAN_KINDS, ScanPlan, plan_scan, scan
from memjax._schedule import Op, Schedule, ScheduleError, simulate
from memjax._solver import KINDS, Policy, hsm_cost, min_memory, solve
from memjax._train import (
    TrainState,
    init_train_state,
    latest_checkpoint,
    load_checkpoint,
    make_train_step,
    save_checkpoint,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "SCAN_KINDS",
    "StepCosts",
    "TrainState",
    "Explanation",
    "Op",
    "Policy",
    "ScanPlan",
    "Schedule",
    "ScheduleError",
    "estimate_step_costs",
    "explain",
    "format_bytes",
    "hsm_cost",
    "init_train_state",
    "latest_checkpoint",
    "load_checkpoint",
    "make_train_step",
    "min_memory",
    "parse_budget",
    "plan_scan",
    "predict_seconds",
    "save_checkpoint",
    "scan",
    "simulate",
    "solve",
    "train",
]
