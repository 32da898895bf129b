"""Compile time and program size of the jitted gradient against sequence length: memjax against jax.lax.scan.

For T = 10^2 .. 10^5 and a small LSTM (batch 8, 32 inputs, 32 units; loss inside the body), each case runs in a
fresh subprocess (empty caches; a case is cut off after ``--cap`` seconds) and reports

* solve: ``memjax.solve`` alone (the policy); plan: ``memjax.plan_scan`` (measuring the step, then solving);
  schedule: flattening the policy into its table of actions;
* trace+lower: ``jax.jit(jax.grad(loss)).lower(...)``, which includes memjax's planning;
* compile: XLA's ``lowered.compile()``;
* HLO: characters of the lowered StableHLO text, and of the optimised HLO after compilation;
* temp: ``compiled.memory_analysis().temp_size_in_bytes``.

memjax's program does not grow with T except for the schedule's integer tables, which it embeds as constants
(a few int32 per action). The msm solver is the slow part at large T (it is being sped up); hsm is a closed form.

    python benchmarks/compile_time.py [--lengths 100 1000 10000 100000] [--methods lax memjax-hsm memjax-msm]
                                      [--memory 5%] [--cap 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import common

_CASE = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import jax, jax.numpy as jnp
import memjax
from lstm import init_params, lstm_step

T, B, H = {length}, 8, 32
method, memory = {method!r}, {memory!r}
params = init_params("lstm", jax.random.PRNGKey(0), H, H)
xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, H))
init = (jnp.zeros((B, H)), jnp.zeros((B, H)))
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
    from common import clear_solver_caches
    clear_solver_caches()
    start = time.perf_counter()
    memjax.solve(T, plan.policy.memory, alpha=plan.policy.alpha, kind=kind)
    out["solve_s"] = time.perf_counter() - start
print(json.dumps(out))
"""


def run_case(length: int, method: str, memory: str, cap: float) -> dict:
    import pathlib

    code = _CASE.format(bench=str(pathlib.Path(__file__).resolve().parent), length=length, method=method,
                        memory=memory)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"error": f"> {cap:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        name, _, message = last.partition(": ")
        return {"error": f"{name.rsplit('.', 1)[-1]}: {message}"[:80] if message else last[:80]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(result: dict, key: str, spec: str, scale: float = 1.0) -> str:
    if "error" in result:
        return "—"
    value = result.get(key)
    if value is None:
        return "—"
    return format(value * scale if scale != 1.0 else value, spec)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["lax", "memjax-hsm", "memjax-msm"],
                        choices=["lax", "memjax-hsm", "memjax-msm", "memjax-ism", "memjax-chen"])
    parser.add_argument("--memory", default="5%", help="memjax's budget (default 5%% of store-all)")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds before a case is cut off")
    args = parser.parse_args(argv)
    rows, results = [], []
    for length in args.lengths:
        for method in args.methods:
            common.log(f"T={length} {method} ...")
            result = run_case(length, method, args.memory, args.cap)
            results.append((length, method, result))
            name = "jax.lax.scan" if method == "lax" else f"memjax {method.split('-')[1]} {args.memory}"
            rows.append([f"{length:,}", name, _cell(result, "fwd_per_step", ".3f"), _cell(result, "actions", ","),
                         _cell(result, "solve_s", ".2f"), _cell(result, "plan_s", ".2f"),
                         _cell(result, "schedule_s", ".2f"),
                         _cell(result, "lower_s", ".2f"), _cell(result, "compile_s", ".2f"),
                         _cell(result, "hlo_chars", ".0f", 1 / 1024), _cell(result, "compiled_chars", ".0f", 1 / 1024),
                         _cell(result, "temp_bytes", ".3g", 1 / common.MiB), result.get("error", "")])
            common.log("  " + " | ".join(rows[-1][2:]))
    print("### Compile time and program size of the gradient (LSTM, batch 8, 32 units)\n")
    print(common.platform_line() + "\n")
    print(common.markdown_table(
        ["T", "method", "fwd/step", "actions", "solve s", "plan s", "schedule s", "trace+lower s", "compile s",
         "StableHLO KiB", "compiled HLO KiB", "temp MiB", "note"], rows, "llrrrrrrrrrrl"))
    print("\nEach row is a fresh process. plan: memjax.plan_scan from cold caches (measure the step, then solve); "
          "schedule: flattening the policy into its action table (Policy.schedule(), then cached); trace+lower: "
          "jit(grad(loss)).lower after both (includes the executor's integer tables); solve: memjax.solve alone, "
          "from emptied caches, timed last.")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
