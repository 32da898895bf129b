"""Training with optax through :func:`memjax.scan`: a loop whose whole state is checkpointed, so that a run
interrupted at any checkpoint resumes exactly where it stopped.

The state is one pytree, :class:`TrainState` ``(params, opt_state, step, rng)``; a batch is a pure function of
the step number. Checkpoints are plain ``.npz`` files, read back into the structure of a template state.

Example::

  from memjax.training import init_train_state, train

  optimizer = optax.adam(1e-3)
  state = init_train_state(params, optimizer, jax.random.key(0))
  state, history = train(loss_fn, optimizer, state, batches, num_steps=10_000, checkpoint_dir="ckpt")
  # run again after an interruption: it resumes from the newest checkpoint in "ckpt"

This module imports optax; ``import memjax`` alone does not.
"""

from memjax._train import (
    TrainState,
    init_train_state,
    latest_checkpoint,
    load_checkpoint,
    make_train_step,
    save_checkpoint,
    train,
)

__all__ = [
    "TrainState",
    "init_train_state",
    "latest_checkpoint",
    "load_checkpoint",
    "make_train_step",
    "save_checkpoint",
    "train",
]
