"""Gradient memory and time of an LSTM (or GRU) scan: memjax against jax.lax.scan and its peers.

The setting of Gruslys et al. (2016, section 5): an LSTM (:mod:`memjax.models.lstm`; ``--cell gru``:
:mod:`memjax.models.gru`) with 256 inputs and 256 units, batch 64, sequences of T = 100 .. 10,000 steps. The
loss is computed inside the scan body (the sum over steps of a per-step scalar, ``mean(h_t ** 2)``) and
differentiated with respect to the parameters. Methods:

* ``jax.lax.scan`` (stores every step's residuals; the reference),
* ``jax.lax.scan`` over ``jax.checkpoint(body)`` (stores carries, recomputes each step once),
* the same with ``policy=save_only_these_names('gates')`` (saves the gate pre-activations as well),
* Chen et al.'s sqrt(T) scheme written by hand: an outer scan over segments whose inner scans are
  ``jax.checkpoint``-ed (``nested_checkpoint_scan`` from jax issue #2139, two levels),
* ``flax.linen.remat_scan`` with the same two levels (carry-only: the inputs are read by a step index carried
  along and the loss is accumulated in the carry),
* ``equinox.internal.scan(kind="checkpointed")`` with sqrt(T), 5% of T and "all" checkpoints,
* ``memjax.scan`` at 1, 2, 5, 10 and 20% of store-all memory for kinds msm and hsm, with its default budget
  (two forwards per step in about the least memory: ``memjax.planning.two_forward_policy``) and with
  ``kind="store_all"``.

    python benchmarks/lstm.py [--cell lstm|gru] [--T 1000] [--batch 64] [--hidden 256] [--repeats 5]
                              [--png pareto.png] [--quick]

Prints a markdown table to stdout (progress goes to stderr). Run on a loaded machine, compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

import common
import jax
import jax.numpy as jnp

import memjax

# -- cells ------------------------------------------------------------------------------------------------------

# memjax.models' LSTM and GRU, as this checkout defines them (also under a --baseline memjax: common.model).
MODELS = {"lstm": common.model("lstm"), "gru": common.model("gru")}


def init_params(cell: str, key, inputs: int, hidden: int) -> dict:
    """Parameters of the model's LSTM (4 gates) or GRU (3 gates), uniform in +-1/sqrt(hidden) as in PyTorch."""
    return MODELS[cell].init_params(key, inputs, hidden)


def initial_carry(cell: str, batch: int, hidden: int):
    """The model's zero carry: ``(h, c)`` for the LSTM, ``h`` for the GRU."""
    return MODELS[cell].initial_carry(batch, hidden)


def lstm_step(params, carry, x):
    """One LSTM step and its loss term ``mean(h ** 2)``; the gate pre-activations are named ``"gates"``."""
    carry, h = MODELS["lstm"].step(params, carry, x)
    return carry, jnp.mean(h * h)


def gru_step(params, carry, x):
    """One GRU step (PyTorch's convention: the reset gate multiplies ``U_n h + b_hn``) and ``mean(h ** 2)``; both
    pre-activations are named ``"gates"``."""
    carry, h = MODELS["gru"].step(params, carry, x)
    return carry, jnp.mean(h * h)


CELLS = {"lstm": lstm_step, "gru": gru_step}  # the scan body of each cell, its loss inside


# -- methods ----------------------------------------------------------------------------------------------------


def near_sqrt_factors(length: int) -> tuple[int, int]:
    """``(segments, segment_length)`` with product ``length`` and both as close to sqrt(length) as possible."""
    best = min((d for d in range(1, length + 1) if length % d == 0), key=lambda d: abs(d - math.sqrt(length)))
    return length // best, best


def chen_scan(step, params, init, xs, segments: int, segment: int):
    """Chen et al.'s sqrt(T) scheme by hand: an outer scan over ``segments`` checkpointed inner scans."""

    @jax.checkpoint
    def run_segment(params, carry, xs_segment):
        return jax.lax.scan(lambda c, x: step(params, c, x), carry, xs_segment)

    def outer(carry, xs_segment):
        return run_segment(params, carry, xs_segment)

    xs_segments = jax.tree_util.tree_map(lambda a: a.reshape(segments, segment, *a.shape[1:]), xs)
    carry, ys = jax.lax.scan(outer, init, xs_segments)
    return carry, jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), ys)


def chen_remat_scan(segments: int, segment: int):
    """:func:`chen_scan` as a scan ``scan(f, init, xs)`` (``f(carry, x)`` closes over its parameters)."""
    return lambda f, init, xs: chen_scan(lambda _, c, x: f(c, x), None, init, xs, segments, segment)


def equinox_scan(checkpoints):
    """``equinox.internal.scan(kind="checkpointed", checkpoints=...)`` as ``scan(f, init, xs)``, or ``None``
    without equinox."""
    try:
        import equinox.internal as eqxi
    except ImportError:  # pragma: no cover
        return None
    scan = functools.partial(eqxi.scan, kind="checkpointed", checkpoints=checkpoints)
    return lambda f, init, xs: scan(f, init, xs)


def flax_remat_scan(segments: int, segment: int):
    """A scan ``scan(f, init, xs) -> (carry, sum of ys)`` by ``flax.linen.remat_scan(lengths=(segments, segment))``,
    or ``None`` without flax.

    ``remat_scan`` scans a carry only (no ``xs``, no ``ys``): the step reads its input at a step index carried
    along, and the sum of the per-step outputs is accumulated in the carry.
    """
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        return None

    class Step(nn.Module):
        body: object
        xs: object

        def __call__(self, carry):
            state, index, total = carry
            x = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False), self.xs)
            state, y = self.body(state, x)
            return state, index + 1, total + jnp.sum(y)

    Stack = nn.remat_scan(Step, lengths=(segments, segment))

    def scan(f, init, xs):
        dtype = jax.tree_util.tree_leaves(xs)[0].dtype
        state, _, total = Stack(f, xs).apply({}, (init, jnp.zeros((), jnp.int32), jnp.zeros((), dtype)))
        return state, total

    return scan


def memjax_method(
    step, params, init, xs, name, memory, kind, checkpoint_policy=None, loss=None, module=memjax, executor=None
) -> common.Method:
    """``memjax.scan`` of ``step`` with this budget, kind and checkpoint policy; its note gives the budget.

    ``loss`` is the method's loss where it is not the sum of the scan's outputs (a model's own loss that runs
    ``memjax.scan`` with the same settings); the plan behind the note is that of ``step`` over ``init, xs``.
    ``module``: the memjax to run (an older copy from :func:`common.load_baseline` for ``(before)`` rows).
    ``executor``: memjax's ``executor=`` (``None``: its default).
    """
    length = xs.shape[0]

    def body(c, x):
        return step(params, c, x)

    extra = {} if executor is None else {"executor": executor}
    plan = module.plan_scan(body, init, xs, memory=memory, kind=kind, checkpoint_policy=checkpoint_policy, **extra)
    scan = functools.partial(module.scan, memory=memory, kind=kind, checkpoint_policy=checkpoint_policy, **extra)

    def sum_loss(p, i, x):
        return jnp.sum(scan(lambda c, z: step(p, c, z), i, x)[1])

    note = f"budget {memjax.format_bytes(plan.budget_bytes)}, stores {memjax.format_bytes(plan.stored_bytes)}"
    if hasattr(plan, "executor"):
        note += f", {plan.executor}, {plan.conditionals} conditionals"
    if kind == "auto":
        note += f", picked {plan.policy.kind}"
    return common.Method(name, loss or sum_loss, plan.forward_count / length, note)


def peer_methods(cell: str, length: int, equinox_checkpoints=None) -> list[common.Method]:
    """``jax.lax.scan`` and the peers (every method but memjax's), each as ``loss(params, init, xs)``.

    ``equinox_checkpoints``: the checkpoint counts of equinox's checkpointed scan (default sqrt(T), 5% of T and
    ``"all"``).
    """
    step = CELLS[cell]

    def scan_loss(scan):
        def loss(params, init, xs):
            return jnp.sum(scan(lambda c, x: step(params, c, x), init, xs)[1])

        return loss

    checkpointed = jax.checkpoint(step)
    gates_saved = jax.checkpoint(step, policy=jax.checkpoint_policies.save_only_these_names("gates"))
    segments, segment = near_sqrt_factors(length)
    methods = [
        common.Method("jax.lax.scan", scan_loss(jax.lax.scan), 1.0),
        common.Method(
            "lax.scan + checkpoint(body)",
            lambda p, i, x: jnp.sum(jax.lax.scan(lambda c, z: checkpointed(p, c, z), i, x)[1]),
            2.0,
            "stores every carry",
        ),
        common.Method(
            "lax.scan + checkpoint(save 'gates')",
            lambda p, i, x: jnp.sum(jax.lax.scan(lambda c, z: gates_saved(p, c, z), i, x)[1]),
            1.0,
            "stores carries and gate pre-activations; recomputes the nonlinearities",
        ),
        common.Method(
            f"chen nested remat ({segments}x{segment})",
            lambda p, i, x: jnp.sum(chen_scan(step, p, i, x, segments, segment)[1]),
            2.0,
            "hand-rolled: outer scan over checkpointed inner scans",
        ),
    ]
    flax_scan = flax_remat_scan(segments, segment)
    if flax_scan is None:
        methods.append(common.Method(f"flax remat_scan ({segments}x{segment})", None, None, "flax not installed"))
    else:
        methods.append(
            common.Method(
                f"flax remat_scan ({segments}x{segment})",
                scan_loss(flax_scan),
                2.0,
                "carry-only: inputs read by a carried index, loss summed in the carry",
            )
        )
    if equinox_checkpoints is None:
        equinox_checkpoints = sorted({max(2, round(math.sqrt(length))), max(2, round(0.05 * length))}) + ["all"]
    for checkpoints in equinox_checkpoints:
        name = f"equinox checkpointed ({checkpoints})"
        scan = equinox_scan(checkpoints)
        if scan is None:  # pragma: no cover
            methods.append(common.Method(name, None, None, "equinox not installed"))
            continue
        methods.append(common.Method(name, scan_loss(scan), None, "online treeverse; counts checkpoints, not bytes"))
    return methods


def build_methods(
    cell: str,
    params,
    init,
    xs,
    fractions=(0.01, 0.02, 0.05, 0.10, 0.20),
    kinds=("msm", "hsm"),
    equinox_checkpoints=None,
    baseline=None,
    extras=True,
    executors=(),
) -> list[common.Method]:
    """Every method of the benchmark, each as ``loss(params, init, xs)``; with ``baseline`` (an older memjax),
    a ``(before)`` row after each memjax row of a full-residual budget; for each of ``executors``, a row of
    that executor after each msm row."""
    step = CELLS[cell]
    methods = peer_methods(cell, xs.shape[0], equinox_checkpoints)

    def memjax_method_(name, memory, kind, checkpoint_policy=None):
        return memjax_method(step, params, init, xs, name, memory, kind, checkpoint_policy)

    def with_before(name, memory, kind):
        try:
            methods.append(memjax_method_(name, memory, kind))
            for executor in executors if kind == "msm" else ():
                methods.append(
                    memjax_method(step, params, init, xs, f"{name}, {executor}", memory, kind, executor=executor)
                )
            if baseline is not None:
                methods.append(memjax_method(step, params, init, xs, name + " (before)", memory, kind, module=baseline))
        except ValueError as error:
            methods.append(common.Method(name, None, None, str(error).split(";")[0][:100]))

    for kind in kinds:
        for fraction in fractions:
            with_before(f"memjax {kind} {fraction:.0%}", fraction, kind)
    with_before("memjax default (msm)", None, "msm")
    methods.append(memjax_method_("memjax store_all", None, "store_all"))
    if not extras:
        return methods
    # Internal states holding only the gate pre-activations (and the carry): a smaller alpha.
    gates = jax.checkpoint_policies.save_only_these_names("gates")
    methods.append(memjax_method_("memjax default, gates saved", None, "msm", gates))
    for fraction in (0.2, 0.6):
        methods.append(memjax_method_(f"memjax msm {fraction:.0%}, gates saved", fraction, "msm", gates))
    methods.append(memjax_method_("memjax store_all, gates saved", None, "store_all", gates))
    return methods


def peer_matched_methods(
    cell: str, params, init, xs, peers: list[common.Method]
) -> tuple[list[common.Method], dict[str, float]]:
    """memjax at each peer's own memory: its budget is the peer's temp bytes less memjax's fixed overhead.

    The overhead (buffers outside the budget: cotangents, the transient internal state, the schedule's tables)
    is measured on memjax's default plan as compiled temp bytes minus budget bytes. Two memjax variants per
    peer: ``kind="auto"`` (the policy with the least predicted time) and MSM with internal states holding only
    the gate pre-activations.

    Returns:
      The methods, and for each peer the fewest forward evaluations per step that a schedule can make within
      its memory: the least of the peer's own count (where known) and the optimal MSM cost (the paper's
      objective, solved exactly) within the peer's memory less memjax's overhead, with either kind of internal
      state.
    """
    step = CELLS[cell]
    default = memjax_method(step, params, init, xs, "memjax default", None, "msm")
    _, _, temp, _ = common.compile_grad(default.loss, params, init, xs)

    def body(c, x):
        return step(params, c, x)

    overhead = temp - memjax.plan_scan(body, init, xs).budget_bytes
    gates = jax.checkpoint_policies.save_only_these_names("gates")
    methods, fewest = [], {}
    for peer in peers:
        _, _, peer_temp, _ = common.compile_grad(peer.loss, params, init, xs)
        budget = peer_temp - overhead
        counts = [] if peer.forwards is None else [peer.forwards]
        for policy in (None, gates):
            try:
                plan = memjax.plan_scan(body, init, xs, memory=budget, kind="msm", checkpoint_policy=policy)
                counts.append(plan.forward_count / xs.shape[0])
            except ValueError:
                pass
        if counts:
            fewest[peer.name] = min(counts)
        for label, kind, policy in (("auto", "auto", None), ("msm, gates saved", "msm", gates)):
            name = f"memjax {label} @ {peer.name}"
            try:
                methods.append(memjax_method(step, params, init, xs, name, budget, kind, policy))
            except ValueError as error:  # the peer's memory is below what memjax can work with
                methods.append(common.Method(name, None, None, str(error).split(";")[0][:100]))
    return methods, fewest


def peer_table(results: list[common.Result], fewest: dict[str, float] | None = None) -> str:
    """For each peer, the fastest memjax run at no more temp memory, and the ratio of their median times.

    ``fewest`` (from :func:`peer_matched_methods`) adds the forwards per step the peer makes and the fewest any
    schedule can make within its memory: how much a better schedule alone could save on that peer.
    """
    fewest = fewest or {}
    rows = []
    for peer in results:
        if peer.name.startswith("memjax") or not peer.times:
            continue
        row = [
            peer.name,
            f"{peer.temp_mib:.1f}",
            f"{peer.median_s:.3f}",
            "—" if peer.forwards is None else f"{peer.forwards:.3g}",
            f"{fewest[peer.name]:.3g}" if peer.name in fewest else "—",
        ]
        mine = [
            r
            for r in results
            if r.name.startswith("memjax") and r.times and r.temp_bytes is not None and r.temp_bytes <= peer.temp_bytes
        ]
        if not mine:
            rows.append(row + ["—"] * 4)
            continue
        best = min(mine, key=lambda r: r.median_s)
        rows.append(
            row + [best.name, f"{best.temp_mib:.1f}", f"{best.median_s:.3f}", f"{best.median_s / peer.median_s:.2f}"]
        )
    return common.markdown_table(
        [
            "peer",
            "peer MiB",
            "peer s",
            "peer fwd/step",
            "fewest fwd/step at its memory",
            "fastest memjax at <= its memory",
            "memjax MiB",
            "memjax s",
            "memjax / peer time",
        ],
        rows,
        "lrrrrlrrr",
    )


def main(argv=None, cell: str = "lstm") -> list[common.Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(CELLS), default=cell)
    parser.add_argument(
        "--T",
        type=int,
        default=None,
        choices=(100, 1000, 3000, 10000),
        help="sequence length (default 1000; 100 with --quick)",
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 64)")
    parser.add_argument("--hidden", type=int, default=None, help="units (default 256)")
    parser.add_argument("--inputs", type=int, default=None, help="input size (default: --hidden)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 5)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=None,
        help="memjax budgets, fractions of store-all (default 0.01 0.02 0.05 0.1 0.2)",
    )
    parser.add_argument("--kinds", nargs="+", default=["msm", "hsm"], help="memjax kinds at each fraction")
    parser.add_argument(
        "--max-temp-mib", type=float, default=4096, help="compile but do not run methods whose temp memory is larger"
    )
    parser.add_argument("--png", default=None, help="write a Pareto plot (memory vs time) here")
    parser.add_argument(
        "--plot-time",
        choices=("wall", "cpu"),
        default="wall",
        help="the time axis of the plot: median wall time, or median CPU time (steadier under load)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: T=100, batch 4, 16 units, 1 repeat, budgets 5%% only"
    )
    parser.add_argument(
        "--match-peers",
        action="store_true",
        help="also run memjax at each peer's own memory, and print the per-peer comparison",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        default=None,
        help="a folder holding an older memjax (DIR/memjax): adds its memjax rows as '(before)'",
    )
    parser.add_argument(
        "--executors",
        nargs="+",
        default=[],
        choices=("pipelined", "interpreter"),
        help="also run each msm row with these memjax executors",
    )
    parser.add_argument(
        "--no-gates", action="store_true", help="leave out the rows whose internal states hold only the gates"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    length = args.T or (100 if quick else 1000)
    batch = args.batch or (4 if quick else 64)
    hidden = args.hidden or (16 if quick else 256)
    inputs = args.inputs or hidden
    repeats = args.repeats or (1 if quick else 5)
    fractions = args.fractions or ((0.05,) if quick else (0.01, 0.02, 0.05, 0.10, 0.20))

    key_params, key_xs = jax.random.split(jax.random.PRNGKey(args.seed))
    params = init_params(args.cell, key_params, inputs, hidden)
    xs = jax.random.normal(key_xs, (length, batch, inputs), jnp.float32)
    init = initial_carry(args.cell, batch, hidden)
    start = time.perf_counter()
    baseline = common.load_baseline(args.baseline) if args.baseline else None
    methods = build_methods(
        args.cell,
        params,
        init,
        xs,
        fractions,
        tuple(args.kinds),
        baseline=baseline,
        extras=not args.no_gates,
        executors=tuple(args.executors),
    )
    if args.match_peers:
        peers = [m for m in methods if m.loss is not None and not m.name.startswith("memjax")]
        matched, fewest = peer_matched_methods(args.cell, params, init, xs, peers[1:])
        fewest[peers[0].name] = 1.0  # lax.scan's memory holds every residual: one forward per step
        methods += matched
    common.log(f"planned {len(methods)} methods in {time.perf_counter() - start:.1f} s")
    skipped = [common.Result(m.name, m.forwards, "", skipped=m.note) for m in methods if m.loss is None]
    methods = [m for m in methods if m.loss is not None]
    results = common.run_methods(
        methods, (params, init, xs), repeats, max_temp_bytes=int(args.max_temp_mib * common.MiB)
    )
    results += skipped
    title = (
        f"{args.cell.upper()} gradient, T={length}, batch {batch}, {inputs} inputs, {hidden} units; "
        f"median of {repeats} interleaved runs"
    )
    print(f"### {title}\n")
    print(common.platform_line() + "\n")
    print(common.results_table(results))
    print(
        "\nfwd/step: forward step evaluations per step (memjax: its schedule's count; '—': not known in "
        "advance). temp MiB: compiled.memory_analysis().temp_size_in_bytes of the jitted gradient."
    )
    if args.match_peers:
        print("\n#### Each peer against the fastest memjax run at no more temp memory (median wall time)\n")
        print(peer_table(results, fewest))
        print(
            "\nfewest fwd/step at its memory: the exact MSM optimum within the peer's temp memory (less "
            "memjax's overhead), with either kind of internal state."
        )
    if args.png:
        common.pareto_plot(results, args.png, title, time=args.plot_time)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
