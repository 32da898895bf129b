"""Compile time of the jitted gradient, memjax against the scans it replaces: by sequence length, or by framework.

By default, memjax against ``jax.lax.scan`` for sequence lengths 10^2 .. 10^5; with ``--frameworks``, memjax's
drop-ins against the scans of JAX, Flax and Haiku at one length.

**Sequence length** (the default). For T = 10^2 .. 10^5 and a small LSTM (batch 8, 32 inputs, 32 units; loss
inside the body), each case runs in a fresh subprocess (empty caches; a case is cut off after ``--cap`` seconds)
and reports

* solve: ``memjax.planning.solve`` alone (the policy); plan: ``memjax.plan_scan`` (measuring the step, then solving);
  schedule: flattening the policy into its table of actions;
* trace+lower: ``jax.jit(jax.grad(loss)).lower(...)``, which includes memjax's planning;
* compile: XLA's ``lowered.compile()``;
* HLO: characters of the lowered StableHLO text, and of the optimised HLO after compilation;
* temp: ``compiled.memory_analysis().temp_size_in_bytes``.

memjax's program does not grow with T except for the schedule's integer tables, which it embeds as constants
(a few int32 per action). The msm solver is the slow part at large T; hsm is a closed form.

    python benchmarks/compile_time.py [--lengths 100 1000 10000 100000] [--methods lax memjax-hsm memjax-msm]
                                      [--memory 5%] [--cap 120]

**Frameworks** (``--frameworks``). The same LSTM at T=1000 (``--lengths`` to change; ``--size paper``: batch 64,
256 inputs, 256 units; ``--size small paper``: both, one table each), its gradient with respect to the
parameters, six ways:

* ``jax.lax.scan`` and ``memjax.scan`` over the LSTM step of ``benchmarks/lstm.py`` (loss inside the body: the
  sum over steps of ``mean(h_t ** 2)``);
* ``flax.linen.RNN(nn.LSTMCell)`` and ``memjax.flax.RNN(nn.LSTMCell)``;
* ``hk.dynamic_unroll(hk.LSTM)`` and ``memjax.haiku.dynamic_unroll(hk.LSTM)`` (inside ``hk.transform``);

the framework rows compute the same loss after the loop, from the outputs. memjax runs at its default budget
(``--memory`` to set one). Every case runs in a fresh process, ``--rounds`` times, the cases of a round in a
random order drawn anew each round (as ``common.run_methods`` interleaves its timings), and the table gives
medians over the rounds:

* trace+lower: ``jax.jit(jax.grad(loss)).lower(...)``, from cold caches (the process's first trace of the
  gradient; the Flax and Haiku parameters come from an untimed ``init`` on one step of the input first);
* of which planning: for memjax's rows, the seconds spent in ``memjax._scan.prepare`` during that same cold
  trace (what ``memjax.plan_scan`` runs: argument checks, closure conversion, measuring the step, solving);
* compile: ``lowered.compile()``; total: trace+lower + compile (the median of the per-process totals);
* the ratio of memjax's total to ``jax.lax.scan``'s and to the scan it replaces (``lax.scan``, ``nn.RNN``,
  ``hk.dynamic_unroll``), each a ratio of medians.

``--baseline DIR`` (``DIR/memjax``, an older copy: ``mkdir -p build/baseline && git archive <commit> memjax |
tar -x -C build/baseline``) adds memjax's rows run with that copy, labelled ``(before)``: their processes put
``DIR`` first on ``sys.path``. A copy without ``memjax.flax.RNN`` has that row skipped, with a note. The table
goes to stdout and to ``--out`` (default ``benchmarks/results/compile_time_frameworks.md``).

    python benchmarks/compile_time.py --frameworks [--size small paper] [--rounds 3] [--lengths 1000]
                                      [--baseline DIR] [--memory BUDGET] [--cap 120] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import common

_CASE = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import jax, jax.numpy as jnp
import memjax
from lstm import init_params, initial_carry, lstm_step

T, B, H = {length}, 8, 32
method, memory = {method!r}, {memory!r}
params = init_params("lstm", jax.random.PRNGKey(0), H, H)
xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, H))
init = initial_carry("lstm", B, H)
out = {{}}
if method == "lax":
    scan = jax.lax.scan
    out["fwd_per_step"] = 1.0
else:
    kind = method.split("-")[1]
    body = lambda c, x: lstm_step(params, c, x)
    start = time.perf_counter()
    plan = memjax.plan_scan(body, init, xs, memory=memory, kind=kind)
    out["plan_s"] = time.perf_counter() - start
    start = time.perf_counter()
    out["actions"] = len(plan.schedule)  # built on first access, then cached
    out["schedule_s"] = time.perf_counter() - start
    out["fwd_per_step"] = plan.forward_count / T
    scan = lambda f, i, x: memjax.scan(f, i, x, memory=memory, kind=kind)

def loss(params, init, xs):
    return jnp.sum(scan(lambda c, x: lstm_step(params, c, x), init, xs)[1])

start = time.perf_counter()
lowered = jax.jit(jax.grad(loss)).lower(params, init, xs)
out["lower_s"] = time.perf_counter() - start
start = time.perf_counter()
compiled = lowered.compile()
out["compile_s"] = time.perf_counter() - start
out["hlo_chars"] = len(lowered.as_text())
out["compiled_chars"] = len(compiled.as_text())
out["temp_bytes"] = compiled.memory_analysis().temp_size_in_bytes
if method != "lax":  # last, so that the caches it empties are not missed by the lowering above
    memjax.clear_caches()
    start = time.perf_counter()
    memjax.planning.solve(T, plan.policy.memory, alpha=plan.policy.alpha, kind=kind)
    out["solve_s"] = time.perf_counter() - start
print(json.dumps(out))
"""


def run_case(length: int, method: str, memory: str, cap: float) -> dict:
    code = _CASE.format(bench=str(pathlib.Path(__file__).resolve().parent), length=length, method=method, memory=memory)
    return _run_json([sys.executable, "-c", code], cap)


def _cell(result: dict, key: str, spec: str, scale: float = 1.0) -> str:
    if "error" in result:
        return "—"
    value = result.get(key)
    if value is None:
        return "—"
    return format(value * scale if scale != 1.0 else value, spec)


# -- frameworks: memjax's drop-ins against the scans they replace ----------------------------------------------

BENCHMARKS = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = BENCHMARKS / "results" / "compile_time_frameworks.md"
SIZES = {"small": (8, 32, 32), "paper": (64, 256, 256)}  # batch, inputs, units
# The rows, in table order: key, label, the row it replaces (memjax's) or None (the frameworks' own).
FRAMEWORK_ROWS = [
    ("lax", "jax.lax.scan", None),
    ("memjax", "memjax.scan", "lax"),
    ("flax", "flax.linen.RNN(nn.LSTMCell)", None),
    ("memjax-flax", "memjax.flax.RNN(nn.LSTMCell)", "flax"),
    ("haiku", "hk.dynamic_unroll(hk.LSTM)", None),
    ("memjax-haiku", "memjax.haiku.dynamic_unroll(hk.LSTM)", "haiku"),
]


def _framework_loss(method: str, memjax, length: int, batch: int, inputs: int, hidden: int, memory):
    """``(loss, args)`` of one row: ``jax.grad(loss)(*args)`` is the gradient with respect to the parameters,
    ``args[0]``. ``memjax`` is the memjax module to run (``None`` for the rows that need none)."""
    import jax
    import jax.numpy as jnp

    key_params, key_xs = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    if method in ("lax", "memjax"):
        from lstm import init_params, initial_carry, lstm_step

        scan = jax.lax.scan if method == "lax" else (lambda f, i, x: memjax.scan(f, i, x, memory=memory))

        def loss(params, init, xs):
            return jnp.sum(scan(lambda c, x: lstm_step(params, c, x), init, xs)[1])

        params = init_params("lstm", key_params, inputs, hidden)
        xs = jax.random.normal(key_xs, (length, batch, inputs))
        return loss, (params, initial_carry("lstm", batch, hidden), xs)
    if method in ("flax", "memjax-flax"):
        import flax.linen as nn

        xs = jax.random.normal(key_xs, (batch, length, inputs))  # nn.RNN is batch-major
        if method == "flax":
            model = nn.RNN(nn.LSTMCell(hidden))
        else:
            import memjax.flax

            model = memjax.flax.RNN(nn.LSTMCell(hidden), memory=memory)
        variables = model.init(key_params, xs[:, :1])

        def loss(variables, xs):
            return jnp.sum(jnp.mean(model.apply(variables, xs) ** 2, axis=(0, 2)))

        return loss, (variables, xs)
    import haiku as hk

    if method == "haiku":
        unroll = hk.dynamic_unroll
    else:
        import memjax.haiku

        def unroll(core, xs, state):
            return memjax.haiku.dynamic_unroll(core, xs, state, memory=memory)

    def forward(xs):  # time-major, as hk.dynamic_unroll's default
        core = hk.LSTM(hidden)
        return unroll(core, xs, core.initial_state(xs.shape[1]))[0]

    model = hk.without_apply_rng(hk.transform(forward))
    xs = jax.random.normal(key_xs, (length, batch, inputs))
    params = model.init(key_params, xs[:1])

    def loss(params, xs):
        return jnp.sum(jnp.mean(model.apply(params, xs) ** 2, axis=(1, 2)))

    return loss, (params, xs)


def _record_planning(memjax) -> list | None:
    """Record the seconds of every call to ``memjax._scan.prepare`` (``_prepare`` in older copies: the planning
    that ``memjax.plan_scan`` runs, and ``memjax.scan`` runs while it is traced) into the returned list;
    ``None`` where this memjax has neither, so that planning cannot be told apart from the rest of the trace."""
    import importlib

    module = importlib.import_module(memjax.__name__ + "._scan")
    name = next((name for name in ("prepare", "_prepare") if callable(getattr(module, name, None))), None)
    if name is None:
        return None
    prepare = getattr(module, name)
    seconds = []

    def timed_prepare(*args, **kwargs):
        start = time.perf_counter()
        try:
            return prepare(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(module, name, timed_prepare)
    return seconds


def measure_framework_case(method: str, length: int, size: str, memory, baseline: str | None) -> dict:
    """One row in this (fresh) process: trace+lower, planning, compile seconds and temp bytes.

    ``baseline``: a folder whose ``memjax`` is imported instead of the current one (put first on ``sys.path``).
    """
    if baseline:
        sys.path.insert(0, os.path.abspath(baseline))
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # a persistent cache would make compiles free
    memjax = None
    if method.startswith("memjax"):
        import memjax

        if baseline and not os.path.abspath(memjax.__file__).startswith(os.path.abspath(baseline) + os.sep):
            raise SystemExit(f"memjax came from {memjax.__file__}, not from {baseline}")
        if method == "memjax-flax":
            import memjax.flax

            try:
                memjax.flax.RNN  # noqa: B018  (defined lazily, where it exists)
            except AttributeError:
                return {"skipped": "this memjax has no memjax.flax.RNN"}
    batch, inputs, hidden = SIZES[size]
    loss, args = _framework_loss(method, memjax, length, batch, inputs, hidden, memory)
    jax.block_until_ready(args)
    planning = _record_planning(memjax) if memjax is not None else None
    out = {"memjax": memjax.__file__ if memjax is not None else None}
    start = time.perf_counter()
    lowered = jax.jit(jax.grad(loss)).lower(*args)
    out["lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    out["compile_s"] = time.perf_counter() - start
    out["total_s"] = out["lower_s"] + out["compile_s"]
    if planning is not None:
        out["plan_s"], out["plan_calls"] = sum(planning), len(planning)
    analysis = compiled.memory_analysis()
    out["temp_bytes"] = None if analysis is None else int(analysis.temp_size_in_bytes)
    return out


def _run_json(command: list, cap: float) -> dict:
    """Run a case's process and return the JSON object on the last line of its stdout, or ``{"error": ...}``."""
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"error": f"> {cap:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        name, _, message = last.partition(": ")
        return {"error": f"{name.rsplit('.', 1)[-1]}: {message}"[:80] if message else last[:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_framework_case(method: str, length: int, size: str, memory, baseline: str | None, cap: float) -> dict:
    """:func:`measure_framework_case` in a fresh process, cut off after ``cap`` seconds."""
    case = {"method": method, "length": length, "size": size, "memory": memory, "baseline": baseline}
    return _run_json([sys.executable, str(pathlib.Path(__file__).resolve()), "--case", json.dumps(case)], cap)


def _median(results: list, key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def _number(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return "—" if numerator is None or not denominator else f"{numerator / denominator:.2f}"


def _memjax_commit(directory: pathlib.Path) -> str:
    """The commit of the git checkout at ``directory``, marked ``+ uncommitted changes`` where memjax/ differs."""

    def git(*words):
        done = subprocess.run(["git", "-C", str(directory), *words], check=False, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "memjax")
    return commit + (" + uncommitted changes in memjax/" if dirty else "")


def _versions() -> str:
    from importlib import metadata

    found = []
    for name in ("flax", "dm-haiku"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def frameworks_table(args, length: int, size: str) -> tuple[str, dict]:
    """Run every row ``args.rounds`` times in fresh processes, interleaved, and return the markdown section of
    this length and size, and the results: ``{(method, baseline folder or None): [one dict per round]}``."""
    import numpy as np

    batch, inputs, hidden = SIZES[size]
    cases = [(method, None) for method, _, _ in FRAMEWORK_ROWS]
    if args.baseline:
        cases += [(method, args.baseline) for method, _, replaces in FRAMEWORK_ROWS if replaces]
    results = {case: [] for case in cases}
    for round_ in range(args.rounds):
        for index in np.random.default_rng(round_).permutation(len(cases)):
            method, baseline = cases[index]
            done = results[(method, baseline)]
            if done and ("skipped" in done[0] or "error" in done[0]):
                continue  # what failed or was skipped once fails again: not rerun
            label = method + (" (before)" if baseline else "")
            common.log(f"T={length} {size} round {round_ + 1}/{args.rounds}: {label} ...")
            result = run_framework_case(method, length, size, args.memory, baseline, args.cap)
            done.append(result)
            planning = f" (planning {result['plan_s']:.2f} s)" if "plan_s" in result else ""
            common.log(
                "  "
                + (
                    result.get("error")
                    or result.get("skipped")
                    or f"trace+lower {result['lower_s']:.2f} s{planning}, compile {result['compile_s']:.2f} s"
                )
            )

    budget = "default budget" if args.memory is None else f"memory={args.memory}"
    totals = {case: _median(runs, "total_s") for case, runs in results.items()}
    rows = []
    for method, label, replaces in FRAMEWORK_ROWS:
        for baseline in [None, args.baseline] if replaces and args.baseline else [None]:
            runs = results[(method, baseline)]
            good = [r for r in runs if "total_s" in r]
            notes = [r.get("error") or r.get("skipped") for r in runs if "total_s" not in r][:1]
            if good and len(good) < len(runs):
                notes.append(f"{len(good)} of {len(runs)} rounds ran")
            if replaces and good and "plan_s" not in good[0]:
                notes.append("planning not measurable (no memjax._scan.prepare or _prepare)")
            elif replaces and good and good[0]["plan_calls"] != 1:
                notes.append(f"planning: {good[0]['plan_calls']} calls of prepare")
            total, temp = totals[(method, baseline)], _median(good, "temp_bytes")
            spread = f"{min(r['total_s'] for r in good):.2f}–{max(r['total_s'] for r in good):.2f}" if good else "—"
            row = [
                label + (f" ({budget})" if replaces else "") + (" (before)" if baseline else ""),
                _number(_median(good, "lower_s")),
                _number(_median(good, "plan_s")),
                _number(_median(good, "compile_s")),
                _number(total),
                spread,
                _number(None if temp is None else temp / common.MiB, ".3g"),
                _ratio(total, totals[("lax", None)]) if replaces else "—",
                _ratio(total, totals[(replaces, None)]) if replaces else "—",
            ]
            if args.baseline:
                row.append(_ratio(total, totals.get((method, args.baseline))) if replaces and not baseline else "—")
            rows.append(row + ["; ".join(notes)])
    headers = [
        "method",
        "trace+lower s",
        "of which planning s",
        "compile s",
        "total s",
        "total s (min–max)",
        "temp MiB",
        "total vs lax.scan",
        "total vs the scan it replaces",
    ]
    if args.baseline:
        headers.append("total vs (before)")
    headers.append("note")
    title = (
        f"### Compile time of the LSTM gradient by framework: T={length:,}, batch {batch}, {inputs} inputs, "
        f"{hidden} units (`--size {size}`); medians of {args.rounds} round(s), each case a fresh process"
    )
    legend = (
        "trace+lower: `jax.jit(jax.grad(loss)).lower(...)`, the process's first trace of the gradient (cold "
        "caches). of which planning: the part of that trace+lower spent in memjax's planning "
        "(`memjax._scan.prepare`, or `_prepare` in older copies: what `memjax.plan_scan` runs: checks, closure "
        "conversion, measuring the step, solving), also cold; '—' for the rows that do not plan. compile: "
        "`lowered.compile()` (no persistent compilation cache). total: trace+lower + compile, median of the "
        "per-process totals; min–max over the rounds. Ratios are of the medians: `total vs lax.scan` to the "
        "`jax.lax.scan` row, `total vs the scan it replaces` to `jax.lax.scan`, `nn.RNN` or `hk.dynamic_unroll`"
        + ("; `total vs (before)` to the same row with the baseline's memjax." if args.baseline else ".")
        + " temp MiB: `compiled.memory_analysis().temp_size_in_bytes`. The `jax.lax.scan`/`memjax.scan` rows put "
        "the loss (the sum over steps of `mean(h_t ** 2)`) inside the loop; the Flax and Haiku rows compute the "
        "same loss from the loop's outputs, after it. Parameters of the Flax and Haiku rows come from an untimed "
        "`init` on one step first."
    )
    return "\n\n".join(
        [title, common.markdown_table(headers, rows, "l" + "r" * (len(headers) - 2) + "l"), legend]
    ), results


def frameworks(args) -> dict:
    """``--frameworks``: one table per size and length; printed, and written to ``args.out`` with the platform
    header. Returns ``{(size, length): frameworks_table's results}``."""
    started = datetime.datetime.now().isoformat(timespec="seconds")
    load_before, clock = os.getloadavg(), time.perf_counter()
    sections, results = [], {}
    for size in dict.fromkeys(args.size):
        for length in args.lengths or [1000]:
            section, results[(size, length)] = frameworks_table(args, length, size)
            sections.append(section)
    head = [
        common.platform_line() + f"; {_versions()}",
        f"memjax {_memjax_commit(BENCHMARKS.parent)}"
        + (f"; `(before)`: {os.path.abspath(args.baseline)}" if args.baseline else ""),
        (
            f"run {started}, {time.perf_counter() - clock:.0f} s, load average {load_before[0]:.1f} before and "
            f"{os.getloadavg()[0]:.1f} after: `python benchmarks/compile_time.py {' '.join(sys.argv[1:])}`"
        ),
    ]
    title = "## Compile time of the gradient: memjax's drop-ins against the scans they replace"
    text = "\n\n".join([title, "\n".join(f"{line}  " for line in head).rstrip()] + sections) + "\n"
    print(text)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    common.log(f"wrote {out}")
    return results


def main(argv=None) -> list | dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        help="sequence lengths (default 100 1000 10000 100000; with --frameworks, 1000)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["lax", "memjax-hsm", "memjax-msm"],
        choices=["lax", "memjax-hsm", "memjax-msm", "memjax-ism", "memjax-chen"],
    )
    parser.add_argument(
        "--memory", default=None, help="memjax's budget (default 5%% of store-all; with --frameworks, memjax's default)"
    )
    parser.add_argument("--cap", type=float, default=120.0, help="seconds before a case is cut off")
    parser.add_argument(
        "--frameworks",
        action="store_true",
        help="compare memjax's drop-ins with the scans of JAX, Flax and Haiku at one length",
    )
    parser.add_argument(
        "--size",
        nargs="+",
        choices=sorted(SIZES),
        default=["small"],
        help="--frameworks: small (batch 8, 32 inputs, 32 units) and/or paper (64, 256, 256)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--frameworks: fresh processes per case")
    parser.add_argument(
        "--baseline",
        default=None,
        help="--frameworks: a folder holding an older memjax (DIR/memjax): adds '(before)' rows",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="--frameworks: where the table is written")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # a --frameworks case, in its process
    args = parser.parse_args(argv)
    if args.case:
        try:
            result = measure_framework_case(**json.loads(args.case))
        except Exception as error:  # noqa: BLE001  (any failure is a row's note: the parent's table says why)
            result = {"error": common.error_line(error)}
        print(json.dumps(result))
        return result
    if args.frameworks:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        return frameworks(args)
    if args.baseline:
        parser.error("--baseline needs --frameworks (the length sweep has no (before) rows)")
    args.lengths = args.lengths or [100, 1000, 10_000, 100_000]
    args.memory = args.memory or "5%"
    rows, results = [], []
    for length in args.lengths:
        for method in args.methods:
            common.log(f"T={length} {method} ...")
            result = run_case(length, method, args.memory, args.cap)
            results.append((length, method, result))
            name = "jax.lax.scan" if method == "lax" else f"memjax {method.split('-')[1]} {args.memory}"
            rows.append(
                [
                    f"{length:,}",
                    name,
                    _cell(result, "fwd_per_step", ".3f"),
                    _cell(result, "actions", ","),
                    _cell(result, "solve_s", ".2f"),
                    _cell(result, "plan_s", ".2f"),
                    _cell(result, "schedule_s", ".2f"),
                    _cell(result, "lower_s", ".2f"),
                    _cell(result, "compile_s", ".2f"),
                    _cell(result, "hlo_chars", ".0f", 1 / 1024),
                    _cell(result, "compiled_chars", ".0f", 1 / 1024),
                    _cell(result, "temp_bytes", ".3g", 1 / common.MiB),
                    result.get("error", ""),
                ]
            )
            common.log("  " + " | ".join(rows[-1][2:]))
    print("### Compile time and program size of the gradient (LSTM, batch 8, 32 units)\n")
    print(common.platform_line() + "\n")
    print(
        common.markdown_table(
            [
                "T",
                "method",
                "fwd/step",
                "actions",
                "solve s",
                "plan s",
                "schedule s",
                "trace+lower s",
                "compile s",
                "StableHLO KiB",
                "compiled HLO KiB",
                "temp MiB",
                "note",
            ],
            rows,
            "llrrrrrrrrrrl",
        )
    )
    print(
        "\nEach row is a fresh process. plan: memjax.plan_scan from cold caches (measure the step, then solve); "
        "schedule: flattening the policy into its action table (Policy.schedule(), then cached); trace+lower: "
        "jit(grad(loss)).lower after both (includes the executor's integer tables); solve: "
        "memjax.planning.solve alone, from emptied caches, timed last."
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
