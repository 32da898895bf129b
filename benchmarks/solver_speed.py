"""Solve time of ``memjax.planning.solve`` by length, budget and kind; prints a markdown table.

Budgets are fractions of store-all memory, ``1 + (t - 1) * alpha`` units. Every case runs in a fresh subprocess
(so caches start empty and a slow case can be cut off at ``--cap`` seconds); the time is that of ``solve`` alone.
``--rss`` adds each subprocess's peak resident memory (the import of ``memjax.planning`` included: numpy and the
solver, no JAX). The tables of ``msm`` and ``ism`` are kept as the knots of their piecewise-linear columns; what
limits long sequences is time, spent mostly on the columns of small budgets (many knots, many candidate splits).

``--sweep K`` adds a column with the slowest of ``K`` budgets spaced geometrically from 0.1% to 100% of store-all
(for lengths up to 10^4), to back a claim about any budget.

    python benchmarks/solver_speed.py [--alpha 7.5] [--cap 60] [--lengths 100 1000 10000] [--with-1e5] [--rss]
                                      [--sweep 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_CASE = """
import resource, time, memjax.planning
t0 = time.perf_counter()
policy = memjax.planning.solve({length}, {memory!r}, alpha={alpha!r}, kind={kind!r})
print(time.perf_counter() - t0, policy.cost, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_case(length: int, memory: float, alpha: float, kind: str, cap: float, rss: bool = False) -> str:
    code = _CASE.format(length=length, memory=memory, alpha=alpha, kind=kind)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return f"> {cap:g} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return "below least memory" if "below the least" in last else "error: " + last[:80]
    seconds, _, kilobytes = done.stdout.split()
    return f"{float(seconds):.3g} s" + (f" ({int(kilobytes) / 2**20:.2g} GiB)" if rss else "")


def slowest(length: int, store_all: float, fractions, alpha: float, kind: str, cap: float) -> str:
    """The slowest solve over budgets at these fractions of store-all, as ``"<time> (at <fraction>)"``."""
    worst, at = -1.0, None
    for fraction in fractions:
        cell = run_case(length, max(fraction * store_all, 2.0 + alpha), alpha, kind, cap)
        if cell.startswith(">"):
            return f"{cell} (at {fraction:.2%})"
        if cell.endswith(" s") and float(cell.split()[0]) > worst:
            worst, at = float(cell.split()[0]), fraction
    return "below least memory" if at is None else f"{worst:.3g} s (at {at:.2%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=7.5)
    parser.add_argument("--cap", type=float, default=60.0, help="seconds before a case is cut off")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--with-1e5", action="store_true", help="also t = 10^5")
    parser.add_argument("--kinds", nargs="+", default=["msm", "hsm", "ism", "chen"])
    parser.add_argument("--rss", action="store_true", help="also report each case's peak resident memory")
    parser.add_argument("--no-1e6", action="store_true", help="skip the closing t = 10^6 HSM case")
    parser.add_argument(
        "--sweep",
        type=int,
        default=0,
        metavar="K",
        help="also the slowest of K budgets from 0.1%% to 100%% of store-all (t <= 10^4)",
    )
    args = parser.parse_args()
    lengths = args.lengths + ([100_000] if args.with_1e5 else [])
    fractions = (0.01, 0.05, 0.20)
    sweep = [0.001 * 1000 ** (k / (args.sweep - 1)) for k in range(args.sweep)] if args.sweep > 1 else []
    headers = [f"{f:.0%} of store-all" for f in fractions]
    if sweep:
        headers.append(f"slowest of {len(sweep)} budgets, 0.1% to 100%")
    print(f"alpha = {args.alpha:g}, cap {args.cap:g} s per case\n")
    print("| t | kind | " + " | ".join(headers) + " |")
    print("|---|---|" + "---|" * len(headers))
    for length in lengths:
        store_all = 1 + (length - 1) * args.alpha
        for kind in args.kinds:
            cells = []
            for fraction in fractions:
                memory = max(fraction * store_all, 2.0 + args.alpha)
                cells.append(run_case(length, memory, args.alpha, kind, args.cap, args.rss))
            if sweep and length <= 10_000:
                cells.append(slowest(length, store_all, sweep, args.alpha, kind, args.cap))
            elif sweep:
                cells.append("")
            print(f"| {length:,} | {kind} | " + " | ".join(cells) + " |", flush=True)
    if args.no_1e6:
        return
    length = 1_000_000
    memory = 0.01 * (1 + (length - 1) * args.alpha)
    print(f"| {length:,} | hsm | {run_case(length, memory, args.alpha, 'hsm', args.cap, args.rss)} (1%) | | |")


if __name__ == "__main__":
    main()
