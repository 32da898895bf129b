"""A small optax training loop for recurrent models, with checkpoints that lose no progress.

The whole training state is one pytree, :class:`TrainState` ``(params, opt_state, step, rng)``. A step is a pure
function of that state and the batch, and the batch is a pure function of the step number
(``batches(step)``), so a run interrupted at any checkpoint and resumed in a fresh process reproduces the
uninterrupted run bit for bit (same device and JAX version)::

  optimizer = optax.adam(1e-3)
  state = init_train_state(params, optimizer, jax.random.key(0))
  state, history = train(loss_fn, optimizer, state, batches, num_steps=10_000,
                         checkpoint_dir="ckpt", checkpoint_every=500)
  # killed and restarted with the same call: it resumes from the newest checkpoint in "ckpt".

Checkpoints are plain ``.npz`` files (one array per leaf, written atomically), read back into the structure of
a template state; no orbax needed. ``.pkl`` paths store the pytree with ``pickle`` instead (no template needed
to read it back; only load pickles you wrote yourself).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "TrainState",
    "init_train_state",
    "make_train_step",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
]

Params = Any
Batch = Any
# loss_fn(params, batch, rng) -> loss, or (loss, aux) with has_aux=True; aux a dict of scalars.
LossFn = Callable[..., Any]

_CHECKPOINT = re.compile(r"^ckpt_(\d+)\.(npz|pkl)$")


class TrainState(NamedTuple):
    """Everything a training run needs to go on.

    Attributes:
      params: the model parameters (any pytree).
      opt_state: the optax optimizer state.
      step: number of updates made so far (``int32`` scalar).
      rng: the PRNG key for the next step; each step splits it into its own key and the next ``rng``.
    """

    params: Params
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array


def init_train_state(params: Params, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A fresh :class:`TrainState` at step 0."""
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), rng)


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, has_aux: bool = False, jit: bool = True
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """``train_step(state, batch) -> (state, metrics)``: one optax update of ``loss_fn``.

    ``loss_fn(params, batch, rng)`` returns the scalar loss (or ``(loss, aux)`` with ``has_aux``, ``aux`` a dict
    of scalars); use :func:`memjax.scan` inside it for the recurrence. ``metrics`` holds ``loss``,
    ``grad_norm`` (global norm of the gradient) and the entries of ``aux``.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)
        value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(state.params, batch, step_rng)
        loss, aux = value if has_aux else (value, {})
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": _global_norm(grads), **aux}
        return TrainState(params, opt_state, state.step + 1, rng), metrics

    return jax.jit(train_step) if jit else train_step


def _global_norm(tree) -> jax.Array:
    tree_norm = getattr(getattr(optax, "tree", None), "norm", None)  # optax >= 0.2.5; global_norm is deprecated
    return tree_norm(tree) if tree_norm is not None else optax.global_norm(tree)


def train(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    batches: Callable[[int], Batch],
    num_steps: int,
    *,
    has_aux: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    keep: int = 2,
    resume: bool = True,
    log_every: int = 0,
    callback: Callable[[int, dict], None] | None = None,
    train_step: Callable | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train until ``state.step == num_steps``, saving checkpoints and resuming from the newest one.

    Args:
      loss_fn: ``loss_fn(params, batch, rng)``, see :func:`make_train_step`.
      optimizer: an optax ``GradientTransformation``.
      state: the starting state (also the template that checkpoints are read into).
      batches: ``batches(step) -> batch``. A pure function of the step number keeps resumed runs exact.
      num_steps: total number of updates (counting those made before a resume).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      checkpoint_dir: where ``ckpt_<step>.npz`` files go; ``None`` saves nothing.
      checkpoint_every: save every this many steps (0: only at the end). The last step is always saved.
      keep: how many of the newest checkpoints to keep.
      resume: start from the newest checkpoint in ``checkpoint_dir`` if there is one (its step wins over
        ``state``'s).
      log_every: print the metrics every this many steps (0: never).
      callback: called as ``callback(step, metrics)`` after every step (``step`` counts updates made).
      train_step: a prepared :func:`make_train_step` (built from ``loss_fn`` and ``optimizer`` if ``None``).

    Returns:
      ``(state, history)``: the final state and one dict of host floats per step run in this call, with its
      ``step``.
    """
    if train_step is None:
        train_step = make_train_step(loss_fn, optimizer, has_aux=has_aux)
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        newest = latest_checkpoint(checkpoint_dir) if resume else None
        if newest is not None:
            state = load_checkpoint(newest, like=state)
    history = []
    step = int(state.step)
    while step < num_steps:
        state, metrics = train_step(state, batches(step))
        step += 1
        record = {"step": step, **{name: float(value) for name, value in metrics.items()}}
        history.append(record)
        if callback is not None:
            callback(step, record)
        if log_every and step % log_every == 0:
            print(
                " ".join(
                    f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in record.items()
                )
            )
        if checkpoint_dir is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == num_steps):
            save_checkpoint(os.path.join(checkpoint_dir, f"ckpt_{step:08d}.npz"), state)
            _prune(checkpoint_dir, keep)
    return state, history


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _host(leaf) -> np.ndarray:
    return np.asarray(jax.device_get(jax.random.key_data(leaf) if _is_key(leaf) else leaf))


def save_checkpoint(path: str | os.PathLike, state: Any) -> str:
    """Write any pytree of arrays (e.g. a :class:`TrainState`) to ``path``, atomically.

    ``.npz`` (recommended): one array per leaf, in ``jax.tree_util`` order; typed PRNG keys are saved as their
    raw data. Any other suffix: ``pickle`` of the pytree with host (numpy) leaves. The file appears complete or
    not at all (written to a temporary file, then renamed).

    Returns:
      ``path`` as a string.
    """
    path = os.fspath(path)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_ckpt_")
    try:
        with os.fdopen(handle, "wb") as file:
            if path.endswith(".npz"):
                arrays = {f"leaf_{i:05d}": _host(leaf) for i, leaf in enumerate(leaves)}
                np.savez(file, __treedef__=np.array(str(treedef)), **arrays)
            else:
                host = jax.tree_util.tree_unflatten(treedef, [_host(leaf) for leaf in leaves])
                pickle.dump({"state": host, "keys": [_is_key(leaf) for leaf in leaves]}, file)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, like: Any = None) -> Any:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
      path: the file.
      like: a pytree of the same structure (e.g. a freshly initialised :class:`TrainState`): leaves are
        restored with its dtypes, and typed PRNG keys re-wrapped with its key implementation. Required for
        ``.npz``; optional for pickles (without it, leaves come back as numpy arrays and keys as raw data).

    Raises:
      ValueError: if the checkpoint's structure or leaf shapes differ from ``like``'s (the message shows both).
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        if like is None:
            raise ValueError(
                f"load_checkpoint({path!r}) needs like=, a pytree of the saved structure (e.g. a "
                "freshly initialised TrainState), to restore an .npz checkpoint."
            )
        with np.load(path) as data:
            saved_tree = str(data["__treedef__"])
            count = len([name for name in data.files if name.startswith("leaf_")])
            leaves = [data[f"leaf_{i:05d}"] for i in range(count)]
    else:
        with open(path, "rb") as file:
            payload = pickle.load(file)
        if like is None:
            return payload["state"]
        leaves, saved = jax.tree_util.tree_flatten(payload["state"])
        saved_tree = str(saved)
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    if len(leaves) != len(like_leaves):
        raise ValueError(
            f"checkpoint {path!r} has {len(leaves)} leaves but like= has {len(like_leaves)}:\n"
            f"  saved: {saved_tree}\n  like:  {treedef}"
        )
    restored = []
    for i, (leaf, template) in enumerate(zip(leaves, like_leaves)):
        if _is_key(template):
            restored.append(jax.random.wrap_key_data(jnp.asarray(leaf), impl=jax.random.key_impl(template)))
            continue
        shape = np.shape(template)
        if leaf.shape != shape:
            raise ValueError(
                f"checkpoint {path!r}: leaf {i} has shape {leaf.shape} but like= has {shape}:\n"
                f"  saved: {saved_tree}\n  like:  {treedef}"
            )
        restored.append(jnp.asarray(leaf, dtype=jnp.result_type(template)))
    return jax.tree_util.tree_unflatten(treedef, restored)


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The ``ckpt_<step>`` file with the highest step in ``directory`` (``None`` if there is none)."""
    if not os.path.isdir(directory):
        return None
    found = [(int(m.group(1)), name) for name in os.listdir(directory) if (m := _CHECKPOINT.match(name))]
    return os.path.join(os.fspath(directory), max(found)[1]) if found else None


def _prune(directory, keep: int) -> None:
    found = sorted((int(m.group(1)), name) for name in os.listdir(directory) if (m := _CHECKPOINT.match(name)))
    for _, name in found[:-keep] if keep > 0 else []:
        os.remove(os.path.join(directory, name))
