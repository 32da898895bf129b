"""Train the fast-weights RNN on associative retrieval with optax, through ``memjax.scan``, with checkpoints.

Interrupt it at any time (Ctrl-C, a pre-empted job) and run the same command again: it resumes from the newest
checkpoint in ``--checkpoint-dir`` and ends with exactly the parameters of an uninterrupted run, because the
whole state ``(params, opt_state, step, rng)`` is saved and every batch is a pure function of the step number.

  python examples/train_fast_weights.py --steps 3000 --checkpoint-dir /tmp/fw_ckpt
  python examples/train_fast_weights.py --pairs 20 --hidden 128 --memory 5%   # longer sequences, larger state

The recurrence runs with ``memjax.scan`` under ``--memory`` (bytes, "64MiB", "5%", or a fraction); the
gradient is the one ``jax.lax.scan`` gives, with at most that much stored.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import memjax
from memjax import training
from memjax.models import fast_weights as fw


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=4, help="key-digit pairs (sequence length 2*pairs+3)")
    parser.add_argument("--memory", default="10%", help="memjax.scan budget")
    parser.add_argument("--kind", default="msm")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    memory = args.memory
    if memory.replace(".", "", 1).isdigit():
        memory = float(memory) if "." in memory else int(memory)

    vocabulary = 26 + 11
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.learning_rate))

    def loss_fn(params, batch, rng):
        xs, labels = batch
        final, _ = fw.unroll(params, xs, memory=memory, kind=args.kind)
        logits = fw.logits(params, final)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    def batches(step):
        key = jax.random.fold_in(jax.random.key(args.seed + 1), step)
        return fw.associative_retrieval(key, args.batch, num_pairs=args.pairs)

    key = jax.random.key(args.seed)
    params = fw.init_params(key, vocabulary, args.hidden, 10)
    state = training.init_train_state(params, optimizer, jax.random.fold_in(key, 1))
    xs, _ = batches(0)
    memjax.explain(
        lambda c, x: fw.step(params, c, x), fw.initial_state(args.batch, args.hidden), xs, memory=memory, kind=args.kind
    )
    state, history = training.train(
        loss_fn,
        optimizer,
        state,
        batches,
        args.steps,
        has_aux=True,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        log_every=max(1, args.steps // 20),
    )
    test_xs, test_labels = fw.associative_retrieval(jax.random.key(10_000 + args.seed), 1000, num_pairs=args.pairs)
    accuracy = float(fw.accuracy(state.params, test_xs, test_labels, scan=jax.lax.scan))
    print(f"step {int(state.step)}: held-out accuracy {accuracy:.1%}")
    return accuracy


if __name__ == "__main__":
    main()
