"""Dispatch-bound gradients: a recurrence whose step is nearly free, so that what the executor dispatches per step
is all that is measured.

The step: a carry of 4 floats, ``h' = tanh(h @ W + x)``, T = 10,000 steps by default; the gradient is taken with
respect to ``W`` and ``xs``. Methods, interleaved in one process: ``jax.lax.scan``, ``jax.lax.scan`` over
``jax.checkpoint(body)`` (two forwards per step, the same count as memjax's default), and memjax at its default
budget, 5% and 20%, and hsm at 5%; with ``--baseline DIR`` the same memjax rows from an older copy of memjax
(``DIR/memjax``) as ``(before)`` rows. Each memjax row gives the executor and the conditionals per gradient.

    python benchmarks/dispatch.py [--T 10000] [--repeats 7] [--baseline build/baseline] [--quick]

Prints a markdown table (stdout); compare ratios within one run.
"""

from __future__ import annotations

import argparse
import sys

import common
import jax
import jax.numpy as jnp

import memjax

CARRY = 4
ROWS = (("default", None, "msm"), ("5%", "5%", "msm"), ("20%", "20%", "msm"), ("hsm 5%", "5%", "hsm"))


def step(w, h, x):
    h = jnp.tanh(h @ w + x)
    return h, jnp.sum(h)


def scan_loss(scan):
    def loss(params, init):
        w, xs = params
        return jnp.sum(scan(lambda h, x: step(w, h, x), init, xs)[1])

    return loss


def memjax_method(module, label: str, memory, kind: str, w, init, xs) -> common.Method:
    plan = module.plan_scan(lambda h, x: step(w, h, x), init, xs, memory=memory, kind=kind)
    executor = getattr(plan, "executor", "interpreter")
    conditionals = getattr(plan, "conditionals", None)
    note = f"{executor}" + (f", {conditionals} conditionals" if conditionals is not None else "")
    scan = lambda f, i, x: module.scan(f, i, x, memory=memory, kind=kind)  # noqa: E731
    return common.Method(label, scan_loss(scan), plan.forward_count / xs.shape[0], note)


def main(argv=None) -> list[common.Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", default=None, help="a folder holding an older memjax (DIR/memjax)")
    parser.add_argument("--quick", action="store_true", help="T=200, one repeat: a smoke test")
    args = parser.parse_args(argv)
    length, repeats = (200, 1) if args.quick else (args.T, args.repeats)
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (CARRY, CARRY)) * 0.5
    xs = jax.random.normal(jax.random.fold_in(key, 1), (length, 1, CARRY))
    init = jnp.zeros((1, CARRY))
    checkpointed = jax.checkpoint(step)

    def checkpointed_loss(params, init):
        w, xs = params
        return jnp.sum(jax.lax.scan(lambda h, x: checkpointed(w, h, x), init, xs)[1])

    methods = [
        common.Method("jax.lax.scan", scan_loss(jax.lax.scan), 1.0),
        common.Method("lax.scan + checkpoint(body)", checkpointed_loss, 2.0),
    ]
    modules = [("memjax", memjax)]
    if args.baseline:
        modules.append(("memjax (before)", common.load_baseline(args.baseline)))
    for label, memory, kind in ROWS:
        for prefix, module in modules:
            methods.append(memjax_method(module, f"{prefix} {label}", memory, kind, w, init, xs))
    results = common.run_methods(methods, ((w, xs), init), repeats=repeats)
    print(f"## Near-free step: carry of {CARRY} floats, T={length}, gradient w.r.t. W and xs\n")
    print(common.platform_line() + f"; {repeats} interleaved rounds\n")
    print(common.results_table(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
