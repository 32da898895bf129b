"""Very long sequences, T = 10^5 and 10^6: planning time, the plan, predicted against measured memory, and the
gradient's time and accuracy, memjax against ``jax.lax.scan``.

The model: the GRU of :mod:`memjax.models.gru`, 64 units, batch 8, 16 inputs per step, ``xs`` drawn from a normal
distribution. The step's output is the scalar ``mean(h_t ** 2)`` (so that the scan's ``ys`` hold T floats, not
T hidden states: at T=10^6 those alone would be 2 GiB), and the loss, computed from the scan's outputs, is the
mean of ``ys`` over the steps plus the sum of the final carry. The gradient is taken with respect to the
parameters and ``xs``.

Each case (a length, a kind and a budget) runs in two fresh processes, one after the other, each cut off after
its cap (reported as ``timeout``):

* ``--plan-only``: imports, then warms JAX and memjax with a tiny plan of the same kind (T=100, 50%) and empties
  memjax's caches (``memjax.clear_caches()``), then times the whole ``memjax.plan_scan(step, h0, xs, memory=...,
  kind=...)`` plus ``plan.schedule`` and ``plan.tables`` (both built on first access): planning is cached in a
  process, so every plan time comes from a process of its own;
* ``--case``: ``memjax.explain`` (which plans, then caches the plan), ``jax.jit(jax.grad(loss)).lower(...)
  .compile()`` (``compile s``: trace, lower and XLA compile, the plan coming from the cache) and its
  ``memory_analysis()``; then one warm-up run and ``--repeats`` timed runs of the gradient, compared with
  ``jax.lax.scan``'s gradient where that one was run.

``jax.lax.scan`` runs once per length in a process of its own: compiled always (``memory_analysis`` needs no run),
run only where its temp memory is below ``--max-run-mib`` (at 10^5 it needs about 2 GiB; at 10^6 about 20 GiB,
and it is compiled only), its gradient saved for the memjax cases to compare with.

    python benchmarks/long_sequences.py [--T 100000 1000000] [--quick] [--repeats 3] [--cap 300]
                                        [--case-cap 900] [--max-run-mib 4096]
                                        [--out benchmarks/results/long_sequences.md]

Cases: at 10^5 (and at any other ``--T`` but 10^6) msm at 1%, 5% and 4 MiB, ism at 0.05%, hsm at 4 MiB and 64 KiB
and chen at 5%; at 10^6 hsm at 4 MiB and msm at 1%. ``--quick``: T=10^4 only, the cases of 10^5 (a smoke run of a
few minutes). The table goes to stdout and to ``--out``, rewritten after every case; progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import common

BENCHMARKS = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = BENCHMARKS / "results" / "long_sequences.md"
BATCH, HIDDEN, INPUTS = 8, 64, 16
CASES = {
    100_000: [
        ("msm", "1%"),
        ("msm", "5%"),
        ("msm", "4MiB"),
        ("ism", "0.05%"),
        ("hsm", "4MiB"),
        ("hsm", "64KiB"),
        ("chen", "5%"),
    ],
    1_000_000: [("hsm", "4MiB"), ("msm", "1%")],
}
WARM_LENGTH, WARM_MEMORY = 100, "50%"
# --plan-sweep: every kind over budgets from the least (a relative budget below it is raised to it) to store-all.
SWEEP_KINDS = ("msm", "hsm", "ism", "chen")
SWEEP_MEMORIES = ("least", "4KiB", "64KiB", "1MiB", "4MiB", "0.1%", "1%", "5%", "20%", "100%")
DEFAULT_SWEEP_OUT = BENCHMARKS / "results" / "long_sequences_plan.md"


# -- the model ---------------------------------------------------------------------------------------------------


def problem(length: int):
    """``(params, h0, xs)`` of the GRU, the same in every process."""
    import jax

    from memjax.models import gru

    params = gru.init_params(jax.random.PRNGKey(0), INPUTS, HIDDEN)
    xs = jax.random.normal(jax.random.PRNGKey(1), (length, BATCH, INPUTS))
    return jax.block_until_ready((params, gru.initial_carry(BATCH, HIDDEN), xs))


def body_of(params):
    """The scan's step: the GRU step, its output the scalar ``mean(h_t ** 2)``."""
    import jax.numpy as jnp

    from memjax.models import gru

    def body(h, x):
        h, _ = gru.step(params, h, x)
        return h, jnp.mean(h**2)

    return body


def loss_of(scan):
    """``loss(params, h0, xs)``: the mean over steps of ``mean(h_t ** 2)`` plus the sum of the final carry."""
    import jax.numpy as jnp

    def loss(params, h0, xs):
        h, ys = scan(body_of(params), h0, xs)
        return jnp.mean(ys) + jnp.sum(h)

    return loss


def compile_gradient(loss, params, h0, xs):
    """``jit(grad(loss, (params, xs)))`` compiled: ``(compiled, seconds, temp bytes)``."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 2))).lower(params, h0, xs).compile()
    seconds = time.perf_counter() - start
    return compiled, seconds, int(compiled.memory_analysis().temp_size_in_bytes)


def time_gradient(compiled, args, repeats: int):
    """One warm-up run, then ``repeats`` timed ones: ``(gradient, seconds of each timed run)``."""
    import jax

    grads = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return grads, times


# -- the processes of one case -----------------------------------------------------------------------------------


def plan_facts(plan) -> dict:
    """What the table reports of a plan."""
    return {
        "executor": plan.executor,
        "fwd_per_step": plan.forward_count / plan.length,
        "stored_bytes": int(plan.stored_bytes),
        "budget_bytes": int(plan.budget_bytes),
        "raised_to_least": bool(plan.raised_to_least),
        "conditionals": int(plan.conditionals),
    }


_DENSE_CONSTANT = re.compile(r'dense<"0x([0-9A-Fa-f]+)">')


def embedded_bytes(loss, *args) -> int:
    """Bytes of the dense constants in the lowered gradient of ``loss``: the schedule's tables."""
    import jax

    text = jax.jit(jax.grad(loss, argnums=(0, 2))).lower(*args).as_text()
    return sum(len(match.group(1)) // 2 for match in _DENSE_CONSTANT.finditer(text))


def measure_plan(length: int, kind: str, memory: str) -> dict:
    """``--plan-only``: the seconds of one cold plan (after a tiny warm-up plan), and the plan's facts."""
    import memjax

    if memory == "least":
        memory = "1e-9%"  # raised to the least memory the kind can run with

    params, h0, xs = problem(WARM_LENGTH)
    warm = memjax.plan_scan(body_of(params), h0, xs, memory=WARM_MEMORY, kind=kind)
    warm.schedule, warm.tables  # noqa: B018  (built on first access)
    memjax.clear_caches()
    params, h0, xs = problem(length)
    start = time.perf_counter()
    plan = memjax.plan_scan(body_of(params), h0, xs, memory=memory, kind=kind)
    plan.schedule, plan.tables  # noqa: B018
    return {"plan_s": time.perf_counter() - start, **plan_facts(plan)}


def _leaves(tree) -> list:
    import jax
    import numpy as np

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def measure_case(length: int, kind: str, memory: str, repeats: int, reference: str | None) -> dict:
    """``--case``: explain, compile, memory analysis, gradient times and the largest difference from ``reference``
    (an ``.npz`` of ``jax.lax.scan``'s gradient leaves, or ``None``)."""
    import numpy as np

    import memjax

    params, h0, xs = problem(length)
    start = time.perf_counter()
    explanation = memjax.explain(body_of(params), h0, xs, memory=memory, kind=kind, verbose=False)
    out = {"explain_s": time.perf_counter() - start, **plan_facts(explanation.plan)}
    out.update(
        carry_bytes=explanation.carry_bytes,
        internal_bytes=explanation.internal_bytes,
        working_bytes=int(explanation.working_bytes),
        # The gradient flows to xs: its cotangent buffer is the gradient's output, not temp memory.
        predicted_bytes=int(
            explanation.stored_bytes
            + explanation.working_bytes
            - explanation.xs_cotangent_bytes
            - explanation.parameter_cotangent_bytes
        ),
    )
    loss = loss_of(lambda f, i, x: memjax.scan(f, i, x, memory=memory, kind=kind))
    compiled, out["compile_s"], out["temp_bytes"] = compile_gradient(loss, params, h0, xs)
    out["table_bytes"] = embedded_bytes(loss, params, h0, xs)
    grads, out["times"] = time_gradient(compiled, (params, h0, xs), repeats)
    if reference is not None:
        with np.load(reference) as expected:
            leaves = _leaves(grads)
            out["max_error"] = max(
                float(np.max(np.abs(leaf.astype(np.float64) - expected[f"arr_{i}"]))) for i, leaf in enumerate(leaves)
            )
    return out


def measure_lax(length: int, repeats: int, max_run_bytes: int, save: str) -> dict:
    """``--lax``: ``jax.lax.scan``'s gradient compiled; run and saved to ``save`` where its temp fits."""
    import jax
    import numpy as np

    params, h0, xs = problem(length)
    compiled, compile_s, temp = compile_gradient(loss_of(jax.lax.scan), params, h0, xs)
    out = {"compile_s": compile_s, "temp_bytes": temp, "executor": "lax.scan", "fwd_per_step": 1.0}
    if temp > max_run_bytes:
        out["skipped"] = f"not run: temp {temp / common.MiB:,.0f} MiB over --max-run-mib"
        return out
    grads, out["times"] = time_gradient(compiled, (params, h0, xs), repeats)
    np.savez(save, *(leaf.astype(np.float64) for leaf in _leaves(grads)))
    out["saved"] = save
    return out


def run_process(flag: str, spec: dict, cap: float) -> dict:
    """This script with ``flag spec`` in a fresh process: its JSON result, ``{"error": "timeout"}`` after ``cap``
    seconds, or ``{"error": ...}`` with the last line of its stderr."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), flag, json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout (> {cap:g} s)", "wall_s": cap}
    wall = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": last[:160], "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": wall}


# -- the table ---------------------------------------------------------------------------------------------------


def _num(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def _mib(value) -> str:
    if value is None:
        return "—"
    mib = value / common.MiB
    return format(mib, ".3g") if mib < 100 else format(mib, ",.0f")


def _ratio(a, b, spec: str = ".2f") -> str:
    return "—" if a is None or not b else format(a / b, spec)


HEADERS = [
    "T",
    "method",
    "memory",
    "plan s",
    "executor",
    "fwd/step",
    "stored MiB",
    "budget MiB",
    "tables KiB",
    "predicted MiB",
    "temp MiB",
    "predicted / temp",
    "mem vs lax",
    "compile s",
    "grad s (median)",
    "time vs lax",
    "max |Δgrad|",
    "note",
]


def lax_row(length: int, lax: dict) -> list:
    times = lax.get("times")
    return [
        f"{length:,}",
        "jax.lax.scan",
        "—",
        "—",
        "lax.scan",
        "1",
        "—",
        "—",
        "—",
        "—",
        _mib(lax.get("temp_bytes")),
        "—",
        "1",
        _num(lax.get("compile_s"), ".2f"),
        _num(statistics.median(times) if times else None, ".3f"),
        "1" if times else "—",
        "—",
        lax.get("error") or lax.get("skipped", ""),
    ]


def case_row(length: int, kind: str, memory: str, planned: dict, case: dict, lax: dict) -> list:
    facts = {**planned, **case}  # the case process's facts of the plan where both have them (the same plan)
    temp, times = case.get("temp_bytes"), case.get("times")
    median = statistics.median(times) if times else None
    lax_times = lax.get("times")
    notes = []
    if "error" in planned:
        notes.append(f"plan: {planned['error']}")
    if "error" in case:
        notes.append(f"case: {case['error']}")
    if facts.get("raised_to_least"):
        notes.append("budget raised to the least")
    if facts.get("executor") in ("pipelined", "interpreter"):
        notes.append(f"{facts['conditionals']:,} conditionals")
    table = facts.get("table_bytes")
    return [
        f"{length:,}",
        f"memjax {kind}",
        memory,
        _num(planned.get("plan_s"), ".2f"),
        facts.get("executor", "—"),
        _num(facts.get("fwd_per_step"), ".3f"),
        _mib(facts.get("stored_bytes")),
        _mib(facts.get("budget_bytes")),
        _num(table, ",.0f", 1 / 1024) if table is not None else "—",
        _mib(case.get("predicted_bytes")),
        _mib(temp),
        _ratio(case.get("predicted_bytes"), temp, ".3f"),
        _ratio(temp, lax.get("temp_bytes"), ".4f"),
        _num(case.get("compile_s"), ".2f"),
        _num(median, ".3f"),
        _ratio(median, statistics.median(lax_times) if lax_times else None),
        _num(case.get("max_error"), ".1e") if "max_error" in case else ("n/a" if times else "—"),
        "; ".join(notes),
    ]


LEGEND = (
    "plan s: the whole `memjax.plan_scan(step, h0, xs, memory=..., kind=...)` plus `plan.schedule` and `plan.tables`, "
    "in a fresh process after a tiny warm-up plan (T=100) and `memjax.clear_caches()`. executor, fwd/step "
    "(`plan.forward_count / T`), stored (`plan.stored_bytes`: what the schedule stores at its peak, the initial "
    "carry included) and budget (`plan.budget_bytes`): from the plan. tables: the bytes of the dense constants in "
    "the lowered gradient (the schedule's integer tables, kept as periodic runs where those take a quarter of the "
    "bytes or less). "
    "predicted: `memjax.explain`'s `stored_bytes + working_bytes - xs_cotangent_bytes - parameter_cotangent_bytes` "
    "(the gradient flows to `xs` and the parameters, whose cotangents are then the gradient's output); temp: XLA's "
    "`memory_analysis().temp_size_in_bytes` of `jit(grad(loss))` (gradient with respect to the parameters and `xs`; "
    "arguments and the returned gradient are not temp). mem vs lax: temp against `jax.lax.scan`'s "
    "(compiled at every length, run only where its temp is under `--max-run-mib`). compile s: trace, lower and XLA "
    "compile of the gradient, the plan already cached by `explain` in the same process. grad s: median of the "
    "timed runs after one warm-up; time vs lax: against `jax.lax.scan`'s median, where it ran. max |Δgrad|: the "
    "largest absolute difference from `jax.lax.scan`'s gradient (parameters and `xs`); n/a where `lax.scan` was "
    "not run. Conditionals: what the executor evaluates per gradient."
)


def document(args, started: str, clock: float, load_before: float, sizes: str, rows: list) -> str:
    from compile_time import _memjax_commit

    head = [
        common.platform_line(),
        f"memjax {_memjax_commit(BENCHMARKS.parent)}",
        (
            f"run {started}, {time.perf_counter() - clock:.0f} s, load average {load_before:.1f} before and "
            f"{os.getloadavg()[0]:.1f} after: `{' '.join(['python benchmarks/long_sequences.py', *args.argv])}`"
        ),
        f"GRU, {HIDDEN} units, batch {BATCH}, {INPUTS} inputs per step{sizes}; {args.repeats} timed runs per gradient",
    ]
    title = "## Very long sequences: planning, predicted and measured memory, gradient time (GRU)"
    table = common.markdown_table(HEADERS, rows, "lllrlrrrrrrrrrrrrrl")
    return "\n\n".join([title, "\n".join(f"{line}  " for line in head).rstrip(), table, LEGEND]) + "\n"


def _sweep_note(planned: dict) -> str:
    error = planned.get("error")
    if error is None:
        return "raised to the least" if planned["raised_to_least"] else ""
    if "is below the least" in error:
        return "ValueError: below the least memory"
    if "interpreter would need" in error:
        return "ValueError: over 2^31 interpreter rows (give more memory)"
    return error


def plan_sweep(args) -> None:
    """``--plan-sweep``: the plan time of every kind over budgets from the least to store-all, a fresh process
    each, as a markdown table."""
    from compile_time import _memjax_commit

    started, clock = datetime.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    load_before = os.getloadavg()[0]
    rows = []
    for length in [10_000] if args.quick else args.T:
        for kind in SWEEP_KINDS:
            for memory in SWEEP_MEMORIES:
                planned = run_process("--plan-only", {"length": length, "kind": kind, "memory": memory}, args.cap)
                note = _sweep_note(planned)
                rows.append(
                    [
                        f"{length:,}",
                        kind,
                        memory,
                        _num(planned.get("plan_s"), ".2f"),
                        planned.get("executor", "—"),
                        _num(planned.get("fwd_per_step"), ",.3f"),
                        _mib(planned.get("stored_bytes")),
                        note,
                    ]
                )
                common.log(" | ".join(rows[-1]))
    head = [
        common.platform_line(),
        f"memjax {_memjax_commit(BENCHMARKS.parent)}",
        (
            f"run {started}, {time.perf_counter() - clock:.0f} s, load average {load_before:.1f} before and "
            f"{os.getloadavg()[0]:.1f} after: `{' '.join(['python benchmarks/long_sequences.py', *args.argv])}`"
        ),
    ]
    table = common.markdown_table(
        ["T", "kind", "memory", "plan s", "executor", "fwd/step", "stored MiB", "note"], rows, "lllrlrrl"
    )
    text = "\n".join(
        [
            "## Plan time at 10^5 and 10^6 steps, every kind and budget (GRU)",
            "",
            "  \n".join(head),
            "",
            table,
            "",
            "plan s: `memjax.plan_scan(step, h0, xs, memory=..., kind=...)` plus `plan.schedule` and `plan.tables`, "
            "cold, in a fresh process after a tiny warm-up plan (as the main table's). least: a relative budget "
            "below the least memory, which memjax raises to it. A budget in bytes below the least raises "
            "`ValueError` (note).",
        ]
    )
    out = pathlib.Path(args.out if args.out != str(DEFAULT_OUT) else DEFAULT_SWEEP_OUT)
    out.write_text(text + "\n")
    print(text)


def main(argv=None) -> list:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[100_000, 1_000_000], help="sequence lengths")
    parser.add_argument("--quick", action="store_true", help="T=10^4 only: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed gradient runs after one warm-up")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds before a --plan-only process is cut off")
    parser.add_argument("--case-cap", type=float, default=900.0, help="seconds before a case or lax process is")
    parser.add_argument(
        "--max-run-mib", type=float, default=4096.0, help="compile but do not run lax.scan above this temp memory"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where the table is written")
    parser.add_argument(
        "--plan-sweep", action="store_true", help=f"plan times only, all kinds and budgets ({DEFAULT_SWEEP_OUT.name})"
    )
    parser.add_argument("--plan-only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lax", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    for flag, measure in (("plan_only", measure_plan), ("case", measure_case), ("lax", measure_lax)):
        if getattr(args, flag):
            print(json.dumps(measure(**json.loads(getattr(args, flag)))))
            return []
    if args.plan_sweep:
        plan_sweep(args)
        return []
    lengths = [10_000] if args.quick else args.T
    started = datetime.datetime.now().isoformat(timespec="seconds")
    load_before, clock = os.getloadavg()[0], time.perf_counter()
    rows, results, sizes = [], [], ""
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="long_sequences_") as scratch:
        for length in lengths:
            common.log(f"T={length:,} jax.lax.scan ...")
            save = os.path.join(scratch, f"lax_{length}.npz")
            lax = run_process(
                "--lax",
                {
                    "length": length,
                    "repeats": args.repeats,
                    "max_run_bytes": int(args.max_run_mib * common.MiB),
                    "save": save,
                },
                args.case_cap,
            )
            rows.append(lax_row(length, lax))
            results.append((length, "lax", None, lax, {}))
            common.log("  " + " | ".join(rows[-1][10:]))
            for kind, memory in CASES.get(length, CASES[100_000]):
                common.log(f"T={length:,} memjax {kind} {memory}: plan ...")
                planned = run_process("--plan-only", {"length": length, "kind": kind, "memory": memory}, args.cap)
                common.log(f"  plan {planned.get('plan_s', planned.get('error'))}; case ...")
                spec = {
                    "length": length,
                    "kind": kind,
                    "memory": memory,
                    "repeats": args.repeats,
                    "reference": lax.get("saved"),
                }
                case = run_process("--case", spec, args.case_cap)
                if not sizes and "carry_bytes" in case:
                    sizes = (
                        f" (carry {case['carry_bytes']:,} B, internal state {case['internal_bytes']:,} B, "
                        f"alpha {case['internal_bytes'] / case['carry_bytes']:.2f})"
                    )
                rows.append(case_row(length, kind, memory, planned, case, lax))
                results.append((length, kind, memory, planned, case))
                common.log("  " + " | ".join(rows[-1][3:]))
                out.write_text(document(args, started, clock, load_before, sizes, rows))
    text = document(args, started, clock, load_before, sizes, rows)
    out.write_text(text)
    print(text)
    common.log(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
