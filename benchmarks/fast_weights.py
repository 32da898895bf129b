"""Fast weights (Ba et al. 2016): a state of H + H^2 per sequence, memjax against jax.lax.scan and its peers.

    python benchmarks/fast_weights.py [--T 400] [--batch 32] [--hidden 128] [--repeats 3] [--png F] [--quick]

The fast-weight matrix A is part of the carry, so standard BPTT stores O(T H^2) per sequence; a hidden state
is already large, which is where storing internal states selectively (ISM/MSM) pays. Prints one markdown table
(medians, ratios to jax.lax.scan; gradient w.r.t. the parameters of the associative-retrieval loss).
"""

from __future__ import annotations

import argparse
import sys

import common
import jax

from memjax.models import fast_weights

NUM_KEYS = 26


def setup(length: int, batch: int, hidden: int, seed: int = 0):
    """``(params, xs, labels)`` of the benchmark: random inputs of the associative-retrieval task's size."""
    key = jax.random.key(seed)
    params = fast_weights.init_params(key, 2 * NUM_KEYS + 2, hidden, NUM_KEYS)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (length, batch, 2 * NUM_KEYS + 2))
    labels = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, NUM_KEYS)
    return params, xs, labels


def loss_with(**kwargs):
    """``loss(params, xs, labels)`` of the model, with :func:`fast_weights.unroll`'s keywords (``scan``, ``memory``,
    ``kind``)."""
    return lambda params, xs, labels: fast_weights.loss(params, xs, labels, **kwargs)


def checkpointed_scan(f, init, xs):
    """``jax.lax.scan`` over ``jax.checkpoint(f)``: stores every carry, recomputes each step once."""
    return jax.lax.scan(jax.checkpoint(f), init, xs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png", default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke test: T=40, batch 2, 16 units, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.T, args.batch, args.hidden, args.repeats = 40, 2, 16, 1
    params, xs, labels = setup(args.T, args.batch, args.hidden)
    methods = [
        common.Method("jax.lax.scan", loss_with(scan=jax.lax.scan), 1),
        common.Method("lax.scan + checkpoint(body)", loss_with(scan=checkpointed_scan), 2),
    ]
    for kind, memory in (("msm", None), ("msm", 0.05), ("msm", 0.02), ("ism", 0.05), ("hsm", 0.05)):
        label = f"memjax {kind} " + ("default" if memory is None else f"{memory:.0%}")
        methods.append(common.Method(label, loss_with(memory=memory, kind=kind)))
    results = common.run_methods(methods, (params, xs, labels), repeats=args.repeats)
    print(f"Fast weights, T={args.T}, batch {args.batch}, {args.hidden} units; {common.platform_line()}\n")
    print(common.results_table(results))
    if args.png:
        common.pareto_plot(results, args.png, title=f"fast weights, T={args.T}")


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main()
