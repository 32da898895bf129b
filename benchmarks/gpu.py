"""One-shot GPU benchmark: memory and time of the gradient, memjax against jax.lax.scan and its peers.

What it measures, most important first (a global time guard skips what does not fit):

1. the LSTM of ``memjax.models.lstm`` in the paper's setting (Gruslys et al. 2016: 256 inputs, 256 units,
   batch 64), T = 1000;
2. the same LSTM at T = 10,000;
3. the fast-weights RNN of ``memjax.models.fast_weights`` (T = 400, batch 32, 128 units, as
   ``benchmarks/fast_weights.py``).

Methods (the peers are those of ``benchmarks/lstm.py``; for fast weights the same scans wrap the model's own
loss): ``jax.lax.scan`` (the reference); ``lax.scan + checkpoint(body)``; ``lax.scan + checkpoint(save
'gates')`` (LSTM only: the fast-weights model names no gates); Chen's nested remat and ``flax.linen.remat_scan``
(sqrt(T) x sqrt(T)); equinox's checkpointed scan with sqrt(T) checkpoints (where equinox imports); memjax with
its default budget (``memory=None``), ``memory="5%"``, ``memory="20%"`` and ``kind="hsm"`` (``memory=None``: two
forwards per step in about the least memory).
Within a case, ``jax.lax.scan`` and memjax compile first, then the peers.

Each case runs in a fresh subprocess of this script (``--worker CASE``), so that the device's memory high-water
mark starts from nothing in each case, and a case that hangs or crashes is cut off (past the time guard) or
reported without stopping the others. This process only plans the run and writes the tables; it never starts
a device itself.

Before and after: ``--baseline DIR``, where ``DIR/memjax`` is an older copy of the package, runs ``jax.lax.scan``
and the memjax rows again in a second subprocess per case that imports memjax from ``DIR`` (``sys.path[0] =
DIR``). Those rows are labelled ``(before)``, and their ratios are to that subprocess's own ``jax.lax.scan`` row,
``jax.lax.scan (before process)``. A second table per case sets each memjax row beside its ``(before)`` row. Make
a baseline from a commit with::

    mkdir -p build/baseline && git archive <commit> memjax | tar -x -C build/baseline

On the GPU machine (jax, flax, equinox installed; run from the repository root; about 5.5 minutes)::

    PYTHONPATH=. python3 benchmarks/gpu.py --baseline build/baseline --out-dir "$OUT" 2> "$OUT/gpu_progress.log"

Options: ``--budget-seconds 330`` (the time guard, from the start of the script, subprocesses included),
``--quick`` (the small sizes below, anywhere), ``--cases`` (a subset of lstm_short lstm_long fast_weights),
``--repeats`` (timed rounds), ``--out-dir`` (default ``benchmarks/results``).

CPU fallback: where ``jax.default_backend() == "cpu"`` (or with ``--quick``) the sizes shrink so that the run
takes a few minutes on two cores: LSTM batch 8 (256 inputs, 256 units) at T = 200 and T = 1000, fast weights
T = 200, batch 16, 64 units, 5 rounds. The header of the output says so.

Output: ``<out-dir>/gpu_lstm.md`` (both lengths) and ``<out-dir>/gpu_fast_weights.md``, rewritten after every
case, so that what was measured survives a cut; the same tables on stdout (progress on stderr). The header
names jax's version, the device kind, ``XLA_FLAGS`` and the GPU memory fraction. Columns:

* ``fwd/step``: forward step evaluations per step (memjax: its schedule's count; ``—``: not known in advance);
* ``temp MiB``: ``compiled.memory_analysis().temp_size_in_bytes`` of ``jit(grad(loss))`` (deterministic);
* ``peak MiB``: the device's ``memory_stats()["peak_bytes_in_use"]`` after the method's first run less
  ``bytes_in_use`` before it. The high-water mark cannot be reset, so each case starts in a fresh process, every
  method is compiled first, and the first runs go in order of increasing temp memory: each run then raises the
  mark and its own peak (arguments excluded, output included) is read off. Where a run did not raise the mark
  only an upper bound is known, shown ``≤ X``. ``n/a`` where the device keeps no statistics (CPU).
  Compile-time autotuning can also raise the mark, which makes such bounds more likely;
* ``mem vs lax``, ``peak vs lax``, ``time vs lax``: ratios to ``jax.lax.scan`` of the same process;
* ``compile s``: trace, lower and XLA compile; ``grad s``: the median gradient time (``block_until_ready``)
  over interleaved rounds (round r runs every method once, in an order rotated by r), after a warm-up run;
  ``runs``: the rounds timed (fewer than ``--repeats`` where the time guard stopped them);
* ``max |Δgrad|``: the largest absolute difference from ``jax.lax.scan``'s gradient (same process);
* ``note``: memjax's budget and what its schedule stores, or why a row was not run: ``failed: <error>``
  (compilation, planning or the first run raised; the other rows go on) or ``skipped for time``.

The last lines check the paper's headline (95% of the memory saved for about a third more time): per case, the
fastest memjax row at no more than 5% of ``jax.lax.scan``'s temp memory and its time ratio.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # the time guard counts from here, imports included

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
from common import MiB, log  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = "jax.lax.scan"
BEFORE = " (before)"
BEFORE_REFERENCE = "jax.lax.scan (before process)"


@dataclasses.dataclass(frozen=True)
class Sizes:
    lstm_lengths: tuple[int, int]
    batch: int
    inputs: int
    hidden: int
    fw_length: int
    fw_batch: int
    fw_hidden: int
    repeats: int


FULL = Sizes((1000, 10000), 64, 256, 256, 400, 32, 128, 5)
SMALL = Sizes((200, 1000), 8, 256, 256, 200, 16, 64, 5)

# case id -> (output file stem, share of the time budget); run in this order.
CASES = {"lstm_short": ("lstm", 1.0), "lstm_long": ("lstm", 2.0), "fast_weights": ("fast_weights", 1.0)}

# memjax rows: label, memory, kind.
MEMJAX_ROWS = (
    ("memjax default", None, "msm"),
    ("memjax 5%", "5%", "msm"),
    ("memjax 20%", "20%", "msm"),
    ("memjax hsm default", None, "hsm"),
)
# LSTM only, in the current memjax: the same plans run by the row interpreter (executor="interpreter"), to see
# what the pipeline's fewer dispatches buy on the device.
INTERPRETER_ROWS = (("memjax default, interpreter", None, "msm"), ("memjax 5%, interpreter", "5%", "msm"))


# -- cases ------------------------------------------------------------------------------------------------------


def _failed(name: str, error: Exception) -> common.Method:
    return common.Method(name, None, None, "failed: " + common.error_line(error))


def build_case(case: str, sizes: Sizes, memjax_only: bool) -> tuple[str, tuple, list[common.Method]]:
    """``(title, args, methods)`` of a case: the methods in display order, each ``loss(*args)``.

    ``memjax_only``: ``jax.lax.scan`` and the memjax rows (the baseline subprocess). memjax is imported here,
    not at the top, so that the baseline subprocess can put its copy first on ``sys.path`` beforehand.
    """
    import fast_weights as fw_bench
    import lstm  # imports memjax

    from memjax.models import fast_weights

    if case.startswith("lstm"):
        length = sizes.lstm_lengths[case == "lstm_long"]
        key_params, key_xs = jax.random.split(jax.random.PRNGKey(0))
        params = lstm.init_params("lstm", key_params, sizes.inputs, sizes.hidden)
        xs = jax.random.normal(key_xs, (length, sizes.batch, sizes.inputs), jnp.float32)
        init = lstm.initial_carry("lstm", sizes.batch, sizes.hidden)
        title = (
            f"LSTM, T={length}, batch {sizes.batch}, {sizes.inputs} inputs, {sizes.hidden} units "
            "(loss: sum over steps of mean(h^2))"
        )
        step, args = lstm.lstm_step, (params, init, xs)
        peers = lstm.peer_methods("lstm", length, [max(2, round(math.sqrt(length)))])

        def memjax_loss(memory, kind):
            return None  # lstm.memjax_method's own: the sum of the scan's outputs
    else:
        length = sizes.fw_length
        params, xs, labels = fw_bench.setup(length, sizes.fw_batch, sizes.fw_hidden)
        init = fast_weights.initial_state(sizes.fw_batch, sizes.fw_hidden)
        title = (
            f"Fast weights, T={length}, batch {sizes.fw_batch}, {sizes.fw_hidden} units "
            "(associative-retrieval loss on the last state)"
        )
        step, args = fast_weights.step, (params, xs, labels)
        peers = fast_weights_peers(length)

        def memjax_loss(memory, kind):
            return fw_bench.loss_with(memory=memory, kind=kind)

    methods = [peers[0]] if memjax_only else peers
    for name, memory, kind in MEMJAX_ROWS:
        try:
            methods.append(
                lstm.memjax_method(step, params, init, xs, name, memory, kind, loss=memjax_loss(memory, kind))
            )
        except Exception as error:  # planning failed inside memjax: a row that says so, the rest go on
            methods.append(_failed(name, error))
    if case.startswith("lstm") and not memjax_only:  # the executor's own question: pipeline or row interpreter
        for name, memory, kind in INTERPRETER_ROWS:
            try:
                methods.append(lstm.memjax_method(step, params, init, xs, name, memory, kind, executor="interpreter"))
            except Exception as error:
                methods.append(_failed(name, error))
    return title, args, methods


def fast_weights_peers(length: int) -> list[common.Method]:
    """``jax.lax.scan`` and the peers of ``lstm.peer_methods`` around the fast-weights model's own loss."""
    import fast_weights as fw_bench
    import lstm

    segments, segment = lstm.near_sqrt_factors(length)
    scans: list[tuple[str, Callable | None, float | None, str]] = [
        (REFERENCE, jax.lax.scan, 1.0, ""),
        ("lax.scan + checkpoint(body)", fw_bench.checkpointed_scan, 2.0, "stores every carry"),
        (
            f"chen nested remat ({segments}x{segment})",
            lstm.chen_remat_scan(segments, segment),
            2.0,
            "hand-rolled: outer scan over checkpointed inner scans",
        ),
        (
            f"flax remat_scan ({segments}x{segment})",
            lstm.flax_remat_scan(segments, segment),
            2.0,
            "carry-only: inputs read by a carried index",
        ),
    ]
    checkpoints = max(2, round(math.sqrt(length)))
    scans.append(
        (
            f"equinox checkpointed ({checkpoints})",
            lstm.equinox_scan(checkpoints),
            None,
            "online treeverse; counts checkpoints, not bytes",
        )
    )
    return [
        common.Method(
            name,
            None if scan is None else fw_bench.loss_with(scan=scan),
            forwards,
            note if scan is not None else "not installed",
        )
        for name, scan, forwards, note in scans
    ]


# -- measuring --------------------------------------------------------------------------------------------------


def measure(methods: list[common.Method], args: tuple, repeats: int, start: float, end: float) -> list[common.Result]:
    """Measure the methods between ``time.perf_counter()`` values ``start`` and about ``end``: ``jax.lax.scan``
    compiles first, then memjax's rows, then the peers; no compilation starts after 60% of the time, no timing
    round ends past ``end``.

    Returns the results in the order of ``methods``; rows that could not be built (``loss`` ``None``) are
    reported as not run, with their note as the reason.
    """
    runnable = [m for m in methods if m.loss is not None]
    order = sorted(runnable, key=lambda m: 0 if m.name == REFERENCE else 1 if m.name.startswith("memjax") else 2)
    results = common.run_methods(
        order, args, repeats, reference=REFERENCE, compile_deadline=start + 0.6 * (end - start), deadline=end
    )
    by_name = {r.name: r for r in results}
    return [by_name.get(m.name) or common.Result(m.name, m.forwards, "", skipped=m.note) for m in methods]


def platform_info() -> dict:
    """What the numbers depend on: jax, the device, the XLA flags and the GPU client's memory settings."""
    device = jax.devices()[0]
    client = {k: v for k, v in os.environ.items() if k.startswith("XLA_PYTHON_CLIENT_")}
    return {
        "platform": common.platform_line(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "?")),
        "client": ", ".join(f"{k}={v}" for k, v in sorted(client.items())) or "defaults",
    }


def worker(args) -> None:
    """One case in this (fresh) process; with ``--baseline``, ``jax.lax.scan`` and memjax's rows only, with memjax
    imported from there. Writes the results, the sizes and the platform to ``--json``."""
    try:
        _worker(args)
    except BaseException as error:  # the parent's table says why
        with open(args.json, "w") as file:
            json.dump({"error": common.error_line(error)}, file)
        raise


def _worker(args) -> None:
    if args.baseline:
        sys.path.insert(0, os.path.abspath(args.baseline))
    import memjax

    if args.baseline and not os.path.abspath(memjax.__file__).startswith(os.path.abspath(args.baseline)):
        raise SystemExit(f"memjax came from {memjax.__file__}, not from {args.baseline}")
    small_reason = (
        "--quick"
        if args.quick
        else "CPU fallback (jax.default_backend() == 'cpu')"
        if jax.default_backend() == "cpu"
        else ""
    )
    sizes = SMALL if small_reason else FULL
    title, call_args, methods = build_case(args.worker, sizes, memjax_only=bool(args.baseline))
    results = measure(methods, call_args, args.repeats or sizes.repeats, T0, T0 + args.share)
    with open(args.json, "w") as file:
        json.dump(
            {
                "results": [dataclasses.asdict(r) for r in results],
                "title": title,
                "memjax": f"memjax {getattr(memjax, '__version__', '?')} from {memjax.__file__}",
                "sizes": dataclasses.asdict(sizes),
                "small_reason": small_reason,
                "info": platform_info(),
            },
            file,
        )


def run_worker(case: str, args, baseline: str | None, share: float, hard_limit: float) -> tuple[dict | None, str]:
    """Run one case in a subprocess (``baseline``: the ``(before)`` rows) within ``share`` seconds, killed after
    ``hard_limit``. Its progress goes to stderr as it comes.

    Returns its report (``None`` if it failed) and a line: which memjax it imported, or why it failed.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "case.json")
        command = (
            [sys.executable, os.path.abspath(__file__), "--worker", case, "--json", path, "--share", f"{share:.1f}"]
            + (["--baseline", baseline] if baseline else [])
            + (["--repeats", str(args.repeats)] if args.repeats else [])
            + (["--quick"] if args.quick else [])
        )
        log(f"{case}{' (before)' if baseline else ''}: subprocess with {share:.0f} s: {' '.join(command[2:])}")
        try:
            code = subprocess.run(command, timeout=max(hard_limit, 5.0)).returncode
            failure = None if code == 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            failure = f"killed after {hard_limit:.0f} s (time guard)"
        data = {}
        if os.path.exists(path):
            with open(path) as file:
                data = json.load(file)
        if failure is not None or "results" not in data:
            return None, f"subprocess failed: {failure or 'no results'}" + (
                f": {data['error']}" if "error" in data else ""
            )
    data["results"] = [common.Result(**r) for r in data["results"]]
    return data, data["memjax"]


# -- reporting --------------------------------------------------------------------------------------------------


_fmt = common._fmt  # "—" for None and NaN


def _mib(value) -> str:
    return "—" if value is None else _fmt(value / MiB, "mib")


def _peak(r: common.Result) -> str:
    if r.peak_bytes is None:
        return "n/a"
    return ("≤ " if r.peak_is_bound else "") + _mib(r.peak_bytes)


def _ratios(r: common.Result, ref: common.Result | None) -> tuple[float, float, float]:
    """Temp memory, peak memory and median time of ``r`` over ``ref``'s (NaN where unknown)."""
    nan = math.nan
    if ref is None:
        return nan, nan, nan
    temp = r.temp_bytes / ref.temp_bytes if r.temp_bytes is not None and ref.temp_bytes else nan
    peak = (
        r.peak_bytes / ref.peak_bytes if r.peak_bytes is not None and ref.peak_bytes and not ref.peak_is_bound else nan
    )
    seconds = r.median_s / ref.median_s if r.times and ref.times else nan
    return temp, peak, seconds


def _reference_of(r: common.Result, results: list[common.Result]) -> common.Result | None:
    name = BEFORE_REFERENCE if r.name.endswith(BEFORE) or r.name == BEFORE_REFERENCE else REFERENCE
    return next((x for x in results if x.name == name and x.times), None)


def case_table(results: list[common.Result]) -> str:
    rows = []
    for r in results:
        if r.skipped:
            known = r.skipped.startswith(("skipped", "failed")) or "not installed" in r.skipped
            note = r.skipped if known else "failed: " + r.skipped
            rows.append([r.name, _fmt(r.forwards, ".3g"), _mib(r.temp_bytes)] + ["—"] * 8 + [note])
            continue
        temp, peak, seconds = _ratios(r, _reference_of(r, results))
        peak_ratio = ("≤ " if r.peak_is_bound and peak == peak else "") + _fmt(peak, ".3f")
        rows.append(
            [
                r.name,
                _fmt(r.forwards, ".3g"),
                _mib(r.temp_bytes),
                _fmt(temp, ".3f"),
                _peak(r),
                peak_ratio,
                _fmt(r.compile_s, ".2f"),
                _fmt(r.median_s, ".4f"),
                _fmt(seconds, ".2f"),
                str(len(r.times)),
                _fmt(r.max_error, ".1e"),
                r.note,
            ]
        )
    headers = [
        "method",
        "fwd/step",
        "temp MiB",
        "mem vs lax",
        "peak MiB",
        "peak vs lax",
        "compile s",
        "grad s (median)",
        "time vs lax",
        "runs",
        "max |Δgrad|",
        "note",
    ]
    return common.markdown_table(headers, rows, "lrrrrrrrrrrl")


def before_after_table(results: list[common.Result]) -> str | None:
    """Each memjax row beside its ``(before)`` row: temp memory and time, as ratios to each process's lax.scan."""
    by_name = {r.name: r for r in results}
    rows = []
    for name, _, _ in MEMJAX_ROWS:
        after, before = by_name.get(name), by_name.get(name + BEFORE)
        if after is None or before is None:
            continue
        a_temp, _, a_time = _ratios(after, _reference_of(after, results))
        b_temp, _, b_time = _ratios(before, _reference_of(before, results))
        rows.append(
            [
                name,
                _mib(before.temp_bytes),
                _mib(after.temp_bytes),
                _fmt(b_temp, ".3f"),
                _fmt(a_temp, ".3f"),
                _fmt(b_time, ".2f"),
                _fmt(a_time, ".2f"),
                _fmt(a_time / b_time if b_time == b_time and a_time == a_time else math.nan, ".2f"),
            ]
        )
    if not rows:
        return None
    return common.markdown_table(
        [
            "memjax row",
            "temp MiB before",
            "temp MiB after",
            "mem vs lax before",
            "mem vs lax after",
            "time vs lax before",
            "time vs lax after",
            "after / before (time vs lax)",
        ],
        rows,
    )


def headline(label: str, results: list[common.Result]) -> str:
    """The paper's claim checked on one case: the fastest memjax row within 5% of lax.scan's temp memory."""

    def check(suffix: str) -> str:
        rows = []
        for r in results:
            if r.name.startswith("memjax") and r.name.endswith(suffix) and (suffix or not r.name.endswith(BEFORE)):
                temp, _, seconds = _ratios(r, _reference_of(r, results))
                if temp == temp and seconds == seconds:
                    rows.append((r, temp, seconds))
        if not rows:
            return "no memjax row measured"
        within = [x for x in rows if x[1] <= 0.05]
        if within:
            r, temp, seconds = min(within, key=lambda x: x[2])
            return f"{r.name}: {temp:.3f}x the memory (<= 5%: yes) for {seconds:.2f}x the time"
        r, temp, seconds = min(rows, key=lambda x: x[1])
        return f"no memjax row within 5%; the least memory is {r.name}: {temp:.3f}x for {seconds:.2f}x the time"

    line = f"{label}: {check('')}"
    if any(r.name.endswith(BEFORE) for r in results):
        line += f"; before: {check(BEFORE)}"
    return line


def header(info: dict | None, sizes: Sizes, small_reason: str, args) -> str:
    """The platform lines of the tables, from the first subprocess's report (``info``)."""
    lines = ["# memjax GPU benchmark (benchmarks/gpu.py)", ""]
    if info is None:
        lines.append("- platform: unknown (no case reported one)")
    else:
        lines += [
            f"- platform: {info['platform']}",
            f"- jax {info['jax']}; backend {info['backend']}; device kind {info['device_kind']}; default "
            f"matmul precision {info['matmul_precision']}",
            f"- XLA_FLAGS: {info['xla_flags'] or '(not set)'}; GPU client: {info['client']}",
        ]
    lines.append(
        f"- run: {datetime.datetime.now().isoformat(timespec='seconds')}, `python3 benchmarks/gpu.py "
        f"{' '.join(sys.argv[1:])}`, time guard {args.budget_seconds:.0f} s, up to "
        f"{args.repeats or sizes.repeats} rounds; each case in a fresh process"
    )
    if small_reason:
        lines.append(
            f"- **{small_reason}: sizes shrunk** (LSTM batch {sizes.batch}, T={sizes.lstm_lengths[0]} and "
            f"{sizes.lstm_lengths[1]}; fast weights T={sizes.fw_length}, batch {sizes.fw_batch}, "
            f"{sizes.fw_hidden} units); not the GPU setting"
        )
    if args.baseline:
        lines.append(
            f"- baseline (`(before)` rows): {os.path.abspath(args.baseline)}, in a second process per case; "
            "their ratios are to that process's own `jax.lax.scan (before process)`"
        )
    lines.append(
        "- columns: see the docstring of benchmarks/gpu.py; peak MiB is n/a where the device keeps no "
        "memory statistics (CPU)"
    )
    return "\n".join(lines)


def write_outputs(out_dir: pathlib.Path, head: str, sections: dict[str, list[str]]) -> None:
    """``gpu_<model>.md``: the header and the sections of that model's cases measured (or skipped) so far."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for model, parts in sections.items():
        (out_dir / f"gpu_{model}.md").write_text("\n\n".join([head] + parts) + "\n")


# -- main -------------------------------------------------------------------------------------------------------


def parse(argv) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="a folder holding an older copy of memjax (DIR/memjax)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=330.0,
        help="time guard for the whole run, from the start of the script (default 330)",
    )
    parser.add_argument("--quick", action="store_true", help="the small (CPU) sizes, on any device")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a case, in a subprocess
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_of(report: dict) -> Sizes:
    """The sizes a subprocess measured, from its report."""
    return Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["sizes"].items()})


def case_label(case: str, sizes: Sizes) -> str:
    if case == "fast_weights":
        return f"Fast weights, T={sizes.fw_length}"
    return f"LSTM, T={sizes.lstm_lengths[case == 'lstm_long']}"


def run_case(case: str, args, share: float, deadline: float, sizes: Sizes) -> tuple[str, str, dict | None]:
    """One case within ``share`` seconds: 65% to the current memjax's process and the rest (at least 20 s) to
    the baseline's where there is one. Returns its markdown, its headline and the report of its first process."""
    case_end = time.perf_counter() + share
    after_share = share * (0.65 if args.baseline else 1.0)
    after, after_line = run_worker(case, args, None, after_share, deadline + 15 - time.perf_counter())
    results = [] if after is None else after["results"]
    report = after
    if args.baseline:
        before, before_line = run_worker(
            case, args, args.baseline, max(case_end - time.perf_counter(), 20.0), deadline + 15 - time.perf_counter()
        )
        report = report or before
        for r in [] if before is None else before["results"]:
            r.name = BEFORE_REFERENCE if r.name == REFERENCE else r.name + BEFORE
            results.append(r)
    label = case_label(case, sizes_of(report) if report else sizes)
    text = [f"## {report['title'] if report else label}", ""]
    if after is None:
        text += [f"memjax (current): {after_line}.", ""]
    if results:
        text += [case_table(results), ""]
    if args.baseline:
        text += [
            f"Baseline: {before_line}."
            + (
                f" `(before)` rows ran in that process; their ratios are to its own `{BEFORE_REFERENCE}`."
                if before
                else ""
            ),
            "",
        ]
        table = before_after_table(results)
        if table:
            text += ["memjax before and after (each against its own process's jax.lax.scan):", "", table, ""]
    summary = headline(label, results)
    return "\n".join(text + [f"Headline: {summary}"]), summary, report


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    deadline = T0 + args.budget_seconds
    sizes, small_reason, info = (SMALL if args.quick else FULL), ("--quick" if args.quick else ""), None
    sections: dict[str, list[str]] = {}
    summary: list[str] = []
    printed_header = False
    cases = [c for c in CASES if c in args.cases]
    for index, case in enumerate(cases):
        model, _ = CASES[case]
        remaining = deadline - time.perf_counter()
        share = remaining * CASES[case][1] / sum(CASES[c][1] for c in cases[index:])
        if remaining < 20:
            text = line = (
                f"{case_label(case, sizes)}: skipped for time ({remaining:.0f} s left of the "
                f"{args.budget_seconds:.0f} s budget)"
            )
        else:
            log(f"== {case}: {share:.0f} s of {remaining:.0f} s left")
            try:
                text, line, report = run_case(case, args, share, deadline, sizes)
            except Exception as error:  # a bug in reporting must not lose the other cases
                log(traceback.format_exc())
                text, line, report = (f"{case_label(case, sizes)}: failed: {common.error_line(error)}",) * 2 + (None,)
            if report is not None:
                info, small_reason, sizes = report["info"], report["small_reason"], sizes_of(report)
        head = header(info, sizes, small_reason, args)
        if not printed_header:
            print(head + "\n", flush=True)
            printed_header = True
        sections.setdefault(model, []).append(text)
        summary.append(line)
        print(text + "\n", flush=True)
        write_outputs(pathlib.Path(args.out_dir), head, sections)
    print(
        "Summary (paper: 95% of the memory saved for ~1.33x the time; memjax at <= 5% of lax.scan's temp "
        "memory): " + " | ".join(summary)
    )
    log(
        f"wrote {', '.join(f'gpu_{m}.md' for m in sections)} in {args.out_dir}; {time.perf_counter() - T0:.0f} s in all"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
