"""What the policies cost in theory, from the solver alone (no JAX): forwards per step against memory and length.

Memory is in units of one hidden state; an internal state costs ``alpha`` units; the starting state counts one
unit; store-all (standard BPTT) needs ``1 + (t - 1) * alpha`` units. Cost is ``C(t, m) / t``, forward step
evaluations per step, the first forward pass included (1 for standard BPTT, 2 for one extra forward pass).

1. Forwards per step against memory at t = 1000 for HSM (binomial checkpointing; independent of alpha), and for
   MSM, ISM and Chen's sqrt(t) segments at alpha = 2, 5 and 10 (the paper's figure 4 setting).
2. The least memory that reaches a given number of forwards per step (``memjax.planning.min_memory``).
3. Forwards per step against t at a fixed memory (``--fixed-memory`` units), each kind up to the last length
   whose solve is predicted to take under ``--cap`` seconds.

    python benchmarks/theory.py [--length 1000] [--alphas 2 5 10] [--fixed-memory 50] [--cap 20] [--png theory.png]

Prints markdown tables and the solve time of every curve.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import common
import numpy as np

import memjax.planning

MEMORY_GRID = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000, 5000, 10000)
LENGTHS = (100, 200, 500, 1000, 2000, 5000, 10_000, 100_000)
STEP_TARGETS = (1.05, 1.2, 1.5, 2.0, 3.0, 5.0)


def cost_per_step(length: int, memory: float, alpha: float, kind: str) -> float:
    """``C(t, m) / t``, or NaN where ``memory`` is below what ``kind`` needs."""
    try:
        return memjax.planning.solve(length, memory, alpha=alpha, kind=kind).cost / length
    except ValueError:
        return math.nan


def curves(alphas) -> list[tuple[str, str, float]]:
    """``(label, kind, alpha)`` of every curve: HSM once, then MSM, ISM and Chen for each alpha."""
    out = [("HSM", "hsm", 1.0)]
    for alpha in alphas:
        out += [
            (f"MSM α={alpha:g}", "msm", alpha),
            (f"ISM α={alpha:g}", "ism", alpha),
            (f"Chen α={alpha:g}", "chen", alpha),
        ]
    return out


def fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument(
        "--max-memory",
        type=float,
        default=None,
        help="largest memory of table 1 (default: store-all for the largest alpha)",
    )
    parser.add_argument("--fixed-memory", type=float, default=50.0, help="memory of table 3, in units")
    parser.add_argument("--fixed-alpha", type=float, default=5.0, help="alpha of table 3")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="lengths of table 3")
    parser.add_argument(
        "--cap",
        type=float,
        default=20.0,
        help="table 3: skip lengths whose solve is predicted (quadratic in t) to take longer",
    )
    parser.add_argument("--png", default=None, help="write both figures to this PNG")
    args = parser.parse_args(argv)
    t = args.length
    lines = curves(args.alphas)
    top = args.max_memory or (1 + (t - 1) * max(args.alphas))
    grid = [m for m in MEMORY_GRID if m <= top] + ([top] if top not in MEMORY_GRID else [])

    # 1. cost against memory. Solve the widest budget first: the solver then builds one table for the curve.
    costs, seconds = {}, {}  # seconds: the whole curve, from empty caches
    dense_grid = sorted({round(float(m), 1) for m in np.geomspace(1, top, 120)})
    dense = {}
    for label, kind, alpha in lines:
        memjax.clear_caches()
        start = time.perf_counter()
        column = {m: cost_per_step(t, m, alpha, kind) for m in sorted(grid, reverse=True)}
        seconds[label] = time.perf_counter() - start
        costs[label] = [column[m] for m in grid]
        if args.png:  # a finer grid for the figure, from the tables already solved
            dense[label] = [cost_per_step(t, m, alpha, kind) for m in dense_grid]
        common.log(f"{label}: {seconds[label]:.2f} s")
    print(f"### Forwards per step against memory, t = {t}\n")
    print(
        "Memory in hidden-state units (an internal state is α units; store-all is 1 + (t-1)α = "
        + ", ".join(f"{1 + (t - 1) * a:g} for α={a:g}" for a in args.alphas)
        + "). '—': below the least "
        "memory of that policy.\n"
    )
    headers = ["memory"] + [label for label, _, _ in lines]
    rows = [[f"{m:g}"] + [fmt(costs[label][j]) for label, _, _ in lines] for j, m in enumerate(grid)]
    rows.append(["solve s"] + [f"{seconds[label]:.2f}" for label, _, _ in lines])
    print(common.markdown_table(headers, rows))

    # 2. the least memory for a number of forwards per step
    print(f"\n### Least memory (units; % of store-all) for at most k forwards per step, t = {t}\n")
    rows = []
    for label, kind, alpha in lines:
        store_all = 1 + (t - 1) * alpha
        cells = []
        for k in STEP_TARGETS:
            try:
                m = memjax.planning.min_memory(t, math.floor(k * t), alpha=alpha, kind=kind)
                cells.append(f"{m:g}" + (f" ({m / store_all:.1%})" if kind != "hsm" else ""))
            except ValueError:
                cells.append("—")
        rows.append([label] + cells)
    print(common.markdown_table(["policy"] + [f"k = {k:g}" for k in STEP_TARGETS], rows))
    print("\nHSM stores hidden states only and cannot go below 2 - 1/t forwards per step.")

    # 3. cost against length at fixed memory
    m, alpha = args.fixed_memory, args.fixed_alpha
    fixed_lines = [
        ("HSM", "hsm", 1.0),
        (f"MSM α={alpha:g}", "msm", alpha),
        (f"ISM α={alpha:g}", "ism", alpha),
        (f"Chen α={alpha:g}", "chen", alpha),
    ]
    by_length = {label: {} for label, _, _ in fixed_lines}
    timing = {label: {} for label, _, _ in fixed_lines}
    for label, kind, a in fixed_lines:
        previous = None
        for length in args.lengths:
            # the table solvers grow about quadratically in t: skip a length predicted to take over the cap
            if previous is not None and previous[1] * (length / previous[0]) ** 2 > args.cap:
                break
            memjax.clear_caches()
            start = time.perf_counter()
            by_length[label][length] = cost_per_step(length, m, a, kind)
            timing[label][length] = time.perf_counter() - start
            common.log(f"{label} t={length}: {timing[label][length]:.2f} s")
            previous = (length, timing[label][length])
    print(f"\n### Forwards per step against t, memory {m:g} units (α = {alpha:g} for MSM, ISM, Chen)\n")
    rows = []
    for length in args.lengths:
        row = [f"{length:,}"]
        for label, _, _ in fixed_lines:
            if length in by_length[label]:
                row.append(f"{fmt(by_length[label][length])} ({timing[label][length]:.2f} s)")
            else:
                row.append(f"skipped (predicted > {args.cap:g} s)")
        rows.append(row)
    print(common.markdown_table(["t"] + [label for label, _, _ in fixed_lines], rows))
    print(
        "\nIn parentheses: solve time from empty caches. '—': the policy cannot run in this memory (Chen's "
        "segments need about 2 sqrt(α t) units)."
    )

    if args.png:
        plot(args.png, t, dense_grid, dense, lines, by_length, fixed_lines, m, alpha)
    return {"grid": grid, "costs": costs, "by_length": by_length, "seconds": seconds}


def plot(path, t, grid, costs, lines, by_length, fixed_lines, m, alpha) -> None:
    """One panel per alpha (cost against memory, HSM in each), and cost against t at fixed memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"hsm": "black", "msm": "tab:blue", "ism": "tab:orange", "chen": "tab:green"}
    alphas = sorted({a for _, kind, a in lines if kind != "hsm"})
    panels = len(alphas) + 1
    columns = 2 if panels > 2 else panels
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    axes = axes.ravel()
    for ax, a in zip(axes, alphas):
        for label, kind, line_alpha in lines:
            if kind != "hsm" and line_alpha != a:
                continue
            ax.plot(grid, costs[label], "-", color=colors[kind], label=label, lw=1.4, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.9, 12)
        ax.set_xlabel("memory (hidden-state units)")
        ax.set_ylabel("forward evaluations per step")
        ax.set_title(f"t = {t}, α = {a:g} (store-all = {1 + (t - 1) * a:g} units)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[len(alphas)]
    for label, kind, _ in fixed_lines:
        points = sorted((length, c) for length, c in by_length[label].items() if not math.isnan(c))
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, ".-", color=colors[kind], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("sequence length t")
    ax.set_ylabel("forward evaluations per step")
    ax.set_title(f"memory {m:g} units (α = {alpha:g})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    common.log(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
