"""Shared harness of the memjax benchmarks: compile, measure memory, time interleaved, compare gradients, report.

Every method is a scalar loss ``loss(params, *args)``; the harness differentiates it with respect to ``params``
(``jax.jit(jax.grad(loss))``), compiles it ahead of time and records

* compile time: tracing, lowering and XLA compilation (``jit(...).lower(...).compile()``), in seconds;
* temp memory: ``compiled.memory_analysis().temp_size_in_bytes``, the scratch memory XLA allocates for the whole
  gradient (deterministic; it excludes the arguments and the returned gradient);
* gradient time: the median over ``repeats`` runs, the methods *interleaved* (each round runs every method, in
  a random order drawn anew each round, so that load from other processes spreads over all methods alike),
  each timed on its second run in a row (what a run costs depends on the run before it);
* the ratio of memory and time to the reference method (``jax.lax.scan``);
* the largest absolute difference of the gradient from the reference's;
* on devices that keep memory statistics (GPU), the peak memory of the first run (:func:`run_methods`).

It prints a markdown table (:func:`markdown_table`) and, optionally, a Pareto plot (:func:`pareto_plot`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

MiB = 2**20

__all__ = [
    "Method",
    "Result",
    "compile_grad",
    "run_methods",
    "results_table",
    "markdown_table",
    "pareto_plot",
    "log",
    "MiB",
    "platform_line",
    "device_memory",
    "error_line",
    "load_baseline",
    "model",
]


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
    """What was measured for one :class:`Method` (``times`` empty and ``skipped`` set when it was not run).

    ``peak_bytes``: the device's high-water mark during the method's first run less the bytes in use before it
    (``None`` where the device keeps no statistics); an upper bound only when ``peak_is_bound``.
    """

    name: str
    forwards: float | None
    note: str
    compile_s: float = math.nan
    temp_bytes: int | None = None
    times: list = dataclasses.field(default_factory=list)
    cpu_times: list = dataclasses.field(default_factory=list)
    max_error: float = math.nan
    skipped: str = ""
    peak_bytes: int | None = None
    peak_is_bound: bool = False

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
    return max(
        (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(leaves_a, leaves_b)
        ),
        default=0.0,
    )


def device_memory() -> tuple[int, int] | None:
    """``(bytes_in_use, peak_bytes_in_use)`` of the default device, or ``None`` where it keeps no statistics (CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats.get("bytes_in_use", 0)), int(stats["peak_bytes_in_use"])


def error_line(error: BaseException) -> str:
    """An exception in one line: its type and the first line of its message, cut at 120 characters (where the
    message is empty, the file, line and function that raised it)."""
    message = (str(error).strip().splitlines() or [""])[0][:120]
    if not message and error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        message = f"raised at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return f"{type(error).__name__}: {message}"


def run_methods(
    methods: Sequence[Method],
    args: tuple,
    repeats: int = 5,
    reference: str | None = None,
    max_temp_bytes: int | None = None,
    compile_deadline: float | None = None,
    deadline: float | None = None,
) -> list[Result]:
    """Compile every method, run each once (checking its gradient and peak memory), then time them interleaved.

    The first runs go in order of increasing temp memory, so that the device's high-water mark (which cannot be
    reset) rises at each: a method's peak is the high-water mark after its first run less the bytes in use
    before it. Where its run did not raise the mark, only an upper bound is known (``Result.peak_is_bound``).
    Devices without memory statistics (CPU) leave ``Result.peak_bytes`` at ``None``.

    Args:
      methods: the methods; ``methods[0]`` is the reference unless ``reference`` names another.
      args: ``(params, *rest)``, passed to every ``loss``.
      repeats: timed runs per method (after one untimed warm-up run).
      reference: name of the method that gradients, memory and time are compared with.
      max_temp_bytes: compile but do not run methods whose temp memory is larger (they would not fit).
      compile_deadline: a ``time.perf_counter()`` value: methods not started compiling by then are skipped
        (``skipped = "skipped for time"``), so list the most important first (the first one that compiles is
        never skipped).
      deadline: a ``time.perf_counter()`` value: no timing round starts that would end past it, judged by the
        length of the round before (one round at least).

    Returns:
      One :class:`Result` per method, in the order given. A method whose compilation or first run raised has
      ``skipped`` set to the error.
    """
    reference = reference or methods[0].name
    results, compiled_ones = [], []
    for method in methods:
        result = Result(method.name, method.forwards, method.note)
        results.append(result)
        if compile_deadline is not None and compiled_ones and time.perf_counter() > compile_deadline:
            result.skipped = "skipped for time"
            log(f"{method.name}: skipped for time")
            continue
        log(f"compiling {method.name} ...")
        try:
            compiled, result.compile_s, result.temp_bytes, _ = compile_grad(method.loss, *args)
        except Exception as error:  # a peer that cannot express the problem is reported, not fatal
            result.skipped = error_line(error)
            log(f"  skipped: {result.skipped}")
            continue
        log(f"  {result.compile_s:.2f} s, temp {result.temp_mib:.1f} MiB")
        if max_temp_bytes is not None and result.temp_bytes is not None and result.temp_bytes > max_temp_bytes:
            result.skipped = f"temp {result.temp_mib:.0f} MiB over --max-temp-mib"
            continue
        compiled_ones.append((result, compiled))
    runnable, expected = [], None
    for result, compiled in sorted(compiled_ones, key=lambda pair: pair[0].temp_bytes or 0):
        before = device_memory()
        try:
            grads = jax.block_until_ready(compiled(*args))  # warm-up, and the gradient to compare
        except Exception as error:
            result.skipped = error_line(error)
            log(f"{result.name}: first run failed: {result.skipped}")
            continue
        after = device_memory()
        if before is not None and after is not None:
            result.peak_is_bound = after[1] <= before[1]
            result.peak_bytes = max(after[1], before[1]) - before[0]
        if result.name == reference:
            expected = grads
        runnable.append((result, compiled, grads))
    runnable.sort(key=lambda entry: results.index(entry[0]))
    for result, _, grads in runnable:
        if expected is not None:
            result.max_error = _max_abs_difference(grads, expected)
    del expected
    runnable = [(result, compiled) for result, compiled, _ in runnable]
    last_round = 0.0
    for round_ in range(repeats):
        round_start = time.perf_counter()
        if round_ and deadline is not None and round_start + last_round > deadline:
            log(f"timing stopped for time after {round_} round(s)")
            break
        # What a run costs depends on the run before it: one that follows a method with a smaller footprint pays
        # to map its memory again. So each method runs twice in a row and only the second run is timed, in a
        # fresh random order each round.
        order = np.random.default_rng(round_).permutation(len(runnable))
        for result, compiled in (runnable[i] for i in order):
            jax.block_until_ready(compiled(*args))
            start, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(*args))
            result.times.append(time.perf_counter() - start)
            result.cpu_times.append(time.process_time() - cpu)
        last_round = time.perf_counter() - round_start
        log(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{r.name} {r.times[-1]:.2f}s" for r, _ in runnable))
    return results


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (``l`` or ``r``), right by default."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return (
            "| " + " | ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)) + " |"
        )

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1)) for w, a in zip(widths, align))
        + "|"
    )
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
        rows.append(
            [
                r.name,
                _fmt(r.forwards, ".3g"),
                _fmt(r.temp_mib, "mib"),
                _fmt(memory_ratio, ".3f"),
                _fmt(r.compile_s, ".2f"),
                _fmt(r.median_s, ".4g"),  # significant digits: a near-free step's gradient takes under 1 ms
                _fmt(r.min_s, ".4g"),
                _fmt(time_ratio, ".2f"),
                _fmt(r.cpu_s, ".4g"),
                _fmt(cpu_ratio, ".2f"),
                _fmt(r.max_error, ".1e"),
                note,
            ]
        )
    headers = [
        "method",
        "fwd/step",
        "temp MiB",
        "mem vs lax",
        "compile s",
        "grad s (median)",
        "grad s (min)",
        "time vs lax",
        "cpu s (median)",
        "cpu vs lax",
        "max |Δgrad|",
        "note",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrrl")


def pareto_plot(results: Sequence[Result], path: str, title: str = "", time: str = "wall") -> None:
    """Save a PNG: temp memory (log x) against median gradient time, the Pareto front drawn as a step line.

    ``time`` is ``"wall"`` (median wall time) or ``"cpu"`` (median CPU time of the process, steadier on a busy
    machine).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r.temp_mib, r.cpu_s if time == "cpu" else r.median_s, r.name) for r in results if r.times and r.temp_bytes
    ]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for mib, seconds, name in points:
        family = "memjax" if name.startswith("memjax") else name.split()[0]
        color = {
            "memjax": "tab:blue",
            "jax.lax.scan": "black",
            "equinox": "tab:green",
            "flax": "tab:purple",
            "chen": "tab:orange",
        }.get(family, "tab:red")
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


def platform_line() -> str:
    """One line naming the machine the numbers come from."""
    import os
    import platform

    device = jax.devices()[0]
    return (
        f"jax {jax.__version__}, {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}"
    )


REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def model(name: str):
    """The module ``memjax.models.<name>`` of this checkout, also where an older memjax comes first on
    ``sys.path`` (the ``--baseline`` subprocesses of ``gpu.py`` and ``compile_time.py``): before and after then
    run the very same model, and a copy older than the model still runs.

    The model modules import JAX and no memjax, so the file loads alone when the memjax imported is another.
    """
    import importlib
    import importlib.util

    path = REPOSITORY / "memjax" / "models" / f"{name}.py"
    try:
        module = importlib.import_module(f"memjax.models.{name}")
    except ImportError:
        module = None
    if module is not None and pathlib.Path(module.__file__).resolve() == path:
        return module
    alias = f"_benchmark_model_{name}"
    if alias not in sys.modules:
        spec = importlib.util.spec_from_file_location(alias, path)
        sys.modules[alias] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[alias])
    return sys.modules[alias]


def load_baseline(directory: str):
    """An older copy of memjax (``directory/memjax``, e.g. from ``git archive <commit> memjax``), importable next
    to the current one in the same process as ``memjax_before``, so that before and after run interleaved.

    The copy is rewritten into a temporary folder with every ``memjax`` import renamed.
    """
    import importlib
    import os
    import re
    import tempfile

    source = os.path.join(directory, "memjax")
    if not os.path.isdir(source):
        raise SystemExit(f"--baseline {directory}: no memjax package there")
    target = os.path.join(tempfile.mkdtemp(prefix="memjax_before_"), "memjax_before")
    for root, _, files in os.walk(source):
        out = os.path.join(target, os.path.relpath(root, source))
        os.makedirs(out, exist_ok=True)
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name)) as f:
                    text = re.sub(r"\bmemjax\b(?=[.\s])", "memjax_before", f.read())
                with open(os.path.join(out, name), "w") as f:
                    f.write(text)
    sys.path.insert(0, os.path.dirname(target))
    return importlib.import_module("memjax_before")
