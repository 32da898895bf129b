"""Shared harness of the memjax benchmarks: compile, measure memory, time interleaved, compare gradients, report.

Every method is a scalar loss ``loss(params, *args)``; the harness differentiates it with respect to ``params``
(``jax.jit(jax.grad(loss))``), compiles it ahead of time and records

* compile time: tracing, lowering and XLA compilation (``jit(...).lower(...).compile()``), in seconds;
* temp memory: ``compiled.memory_analysis().temp_size_in_bytes``, the scratch memory XLA allocates for the whole
  gradient (deterministic; it excludes the arguments and the returned gradient);
* gradient time: the median over ``repeats`` runs, the methods *interleaved* (round ``r`` runs every method once,
  in an order rotated by ``r``), so that load from other processes spreads over all methods alike;
* the ratio of memory and time to the reference method (``jax.lax.scan``);
* the largest absolute difference of the gradient from the reference's.

It prints a markdown table (:func:`markdown_table`) and, optionally, a Pareto plot (:func:`pareto_plot`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

MiB = 2**20

__all__ = ["Method", "Result", "compile_grad", "run_methods", "results_table", "markdown_table", "pareto_plot",
           "log", "MiB", "clear_solver_caches", "platform_line"]


def log(*parts) -> None:
    """Progress to stderr, so that stdout holds only the tables."""
    print(*parts, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Method:
    """A way to compute the loss whose gradient is benchmarked.

    Attributes:
      name: label in the tables and plots.
      loss: ``loss(params, *args) -> scalar``; differentiated with respect to ``params``.
      forwards: forward step evaluations per step, where known (1 for ``jax.lax.scan``).
      note: a remark printed in the table.
    """

    name: str
    loss: Callable[..., Any]
    forwards: float | None = None
    note: str = ""


@dataclasses.dataclass
class Result:
    """What was measured for one :class:`Method` (``times`` empty and ``skipped`` set when it was not run)."""

    name: str
    forwards: float | None
    note: str
    compile_s: float = math.nan
    temp_bytes: int | None = None
    times: list = dataclasses.field(default_factory=list)
    cpu_times: list = dataclasses.field(default_factory=list)
    max_error: float = math.nan
    skipped: str = ""

    @property
    def median_s(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def cpu_s(self) -> float:
        """Median CPU time of the process (all threads) per run: less sensitive than wall time to other load."""
        return statistics.median(self.cpu_times) if self.cpu_times else math.nan

    @property
    def min_s(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def temp_mib(self) -> float:
        return math.nan if self.temp_bytes is None else self.temp_bytes / MiB


def compile_grad(loss: Callable, *args):
    """``jax.jit(jax.grad(loss))`` compiled ahead of time for ``args``.

    Returns:
      ``(compiled, seconds, temp_bytes, hlo_chars)``: the executable, the time to trace, lower and compile it,
      ``memory_analysis().temp_size_in_bytes`` (``None`` where the backend gives none) and the length of the
      lowered StableHLO text.
    """
    start = time.perf_counter()
    lowered = jax.jit(jax.grad(loss)).lower(*args)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    hlo_chars = len(lowered.as_text())
    analysis = compiled.memory_analysis()
    temp = None if analysis is None else int(analysis.temp_size_in_bytes)
    return compiled, seconds, temp, hlo_chars


def _max_abs_difference(a, b) -> float:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return max((float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                for x, y in zip(leaves_a, leaves_b)), default=0.0)


def run_methods(methods: Sequence[Method], args: tuple, repeats: int = 5, reference: str | None = None,
                max_temp_bytes: int | None = None) -> list[Result]:
    """Compile every method, check its gradient, then time all of them interleaved.

    Args:
      methods: the methods; ``methods[0]`` is the reference unless ``reference`` names another.
      args: ``(params, *rest)``, passed to every ``loss``.
      repeats: timed runs per method (after one untimed warm-up run).
      reference: name of the method that gradients, memory and time are compared with.
      max_temp_bytes: compile but do not run methods whose temp memory is larger (they would not fit).

    Returns:
      One :class:`Result` per method, in the order given.
    """
    reference = reference or methods[0].name
    results, runnable = [], []
    expected = None
    for method in methods:
        result = Result(method.name, method.forwards, method.note)
        results.append(result)
        log(f"compiling {method.name} ...")
        try:
            compiled, result.compile_s, result.temp_bytes, _ = compile_grad(method.loss, *args)
        except Exception as error:  # a peer that cannot express the problem is reported, not fatal
            result.skipped = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            log(f"  skipped: {result.skipped}")
            continue
        log(f"  {result.compile_s:.2f} s, temp {result.temp_mib:.1f} MiB")
        if max_temp_bytes is not None and result.temp_bytes is not None and result.temp_bytes > max_temp_bytes:
            result.skipped = f"temp {result.temp_mib:.0f} MiB over --max-temp-mib"
            continue
        grads = jax.block_until_ready(compiled(*args))  # warm-up, and the gradient to compare
        if method.name == reference:
            expected = grads
        runnable.append((result, compiled, grads))
    for result, _, grads in runnable:
        if expected is not None:
            result.max_error = _max_abs_difference(grads, expected)
    del expected
    runnable = [(result, compiled) for result, compiled, _ in runnable]
    for round_ in range(repeats):
        shift = round_ % max(len(runnable), 1)
        for result, compiled in runnable[shift:] + runnable[:shift]:
            start, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(*args))
            result.times.append(time.perf_counter() - start)
            result.cpu_times.append(time.process_time() - cpu)
        log(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{r.name} {r.times[-1]:.2f}s" for r, _ in runnable))
    return results


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (``l`` or ``r``), right by default."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if a == "l" else v.rjust(w)
                                 for v, w, a in zip(values, widths, align)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _fmt(value: float, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if spec == "mib":  # three significant digits for small sizes, one decimal for large ones
        return format(value, ".3g") if value < 100 else format(value, ".1f")
    return format(value, spec)


def results_table(results: Sequence[Result], reference: str | None = None) -> str:
    """The markdown table of :func:`run_methods`' results, ratios relative to ``reference``."""
    reference = reference or results[0].name
    ref = next(r for r in results if r.name == reference)
    rows = []
    for r in results:
        memory_ratio = r.temp_mib / ref.temp_mib if ref.temp_bytes else math.nan
        time_ratio = r.median_s / ref.median_s if ref.times else math.nan
        cpu_ratio = r.cpu_s / ref.cpu_s if ref.cpu_times else math.nan
        note = r.note if not r.skipped else ("not run: " + r.skipped + ("; " + r.note if r.note else ""))
        rows.append([r.name, _fmt(r.forwards, ".3g"), _fmt(r.temp_mib, "mib"), _fmt(memory_ratio, ".3f"),
                     _fmt(r.compile_s, ".2f"), _fmt(r.median_s, ".3f"), _fmt(r.min_s, ".3f"), _fmt(time_ratio, ".2f"),
                     _fmt(r.cpu_s, ".3f"), _fmt(cpu_ratio, ".2f"),
                     _fmt(r.max_error, ".1e"), note])
    headers = ["method", "fwd/step", "temp MiB", "mem vs lax", "compile s", "grad s (median)", "grad s (min)",
               "time vs lax", "cpu s (median)", "cpu vs lax", "max |Δgrad|", "note"]
    return markdown_table(headers, rows, "lrrrrrrrrrrl")


def pareto_plot(results: Sequence[Result], path: str, title: str = "", time: str = "wall") -> None:
    """Save a PNG: temp memory (log x) against median gradient time, the Pareto front drawn as a step line.

    ``time`` is ``"wall"`` (median wall time) or ``"cpu"`` (median CPU time of the process, steadier on a busy
    machine).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r.temp_mib, r.cpu_s if time == "cpu" else r.median_s, r.name)
              for r in results if r.times and r.temp_bytes]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for mib, seconds, name in points:
        family = "memjax" if name.startswith("memjax") else name.split()[0]
        color = {"memjax": "tab:blue", "jax.lax.scan": "black", "equinox": "tab:green", "flax": "tab:purple",
                 "chen": "tab:orange"}.get(family, "tab:red")
        ax.plot(mib, seconds, "o", color=color, ms=5)
        ax.annotate(name, (mib, seconds), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front, best = [], math.inf
    for mib, seconds, _ in sorted(points):
        if seconds < best:
            front.append((mib, seconds))
            best = seconds
    if front:
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="0.5", lw=1, ls="--", label="Pareto front")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("temp memory of the gradient (MiB, memory_analysis)")
    ax.set_ylabel("median gradient CPU time (s, all threads)" if time == "cpu" else "median gradient time (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log(f"wrote {path}")


def clear_solver_caches() -> None:
    """Empty memjax's solver caches (its lru caches and solved tables), so that the next solve is timed cold.

    Reaches into ``memjax._solver``, whose private names change: it clears whatever caches it finds there.
    """
    from memjax import _solver

    for name, value in vars(_solver).items():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
        elif name.startswith("_") and name.isupper() and isinstance(value, dict):
            value.clear()


def platform_line() -> str:
    """One line naming the machine the numbers come from."""
    import os
    import platform

    device = jax.devices()[0]
    return (f"jax {jax.__version__}, {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}")
