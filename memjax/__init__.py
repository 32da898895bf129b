"""memjax: memory-efficient backpropagation through time for JAX.

Replace ``jax.lax.scan`` with :func:`memjax.scan` and name a memory budget: values and gradients stay the same,
while the backward pass stores at most the budget and recomputes the least that the optimal policy of
Gruslys et al. (NeurIPS 2016) requires.

The top level holds the scan, its plan and its report, and the budget strings they take. The rest is found by
concern:

* :mod:`memjax.planning`: the policies and their schedules, pure numpy (no JAX);
* :mod:`memjax.training`: an optax training loop with checkpoints;
* :mod:`memjax.flax`, :mod:`memjax.haiku`: adapters for Flax (Linen and NNX) and Haiku;
* :mod:`memjax.models`: recurrent models in plain JAX.

``import memjax`` imports neither JAX nor optax: each name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from memjax._budget import format_bytes, parse_budget
from memjax._caches import clear_caches

if TYPE_CHECKING:
    from memjax import flax, haiku, models, planning, training
    from memjax._explain import Explanation, explain
    from memjax._measure import estimate_step_costs
    from memjax._plan import SCAN_KINDS, ScanPlan
    from memjax._scan import plan_scan, scan

__version__ = "0.1.0"

__all__ = [
    "SCAN_KINDS",
    "Explanation",
    "ScanPlan",
    "clear_caches",
    "estimate_step_costs",
    "explain",
    "flax",
    "format_bytes",
    "haiku",
    "models",
    "parse_budget",
    "plan_scan",
    "planning",
    "scan",
    "training",
]

# The module that defines each name imported on first use (PEP 562); the subpackages are imported whole.
_LAZY = {
    "SCAN_KINDS": "memjax._plan",
    "ScanPlan": "memjax._plan",
    "Explanation": "memjax._explain",
    "explain": "memjax._explain",
    "estimate_step_costs": "memjax._measure",
    "plan_scan": "memjax._scan",
    "scan": "memjax._scan",
}
_SUBMODULES = ("flax", "haiku", "models", "planning", "training")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
