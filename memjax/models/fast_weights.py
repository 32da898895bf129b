"""Fast weights RNN (Ba, Hinton, Mnih, Leibo and Ionescu, "Using Fast Weights to Attend to the Recent Past",
NeurIPS 2016, arXiv:1610.06258), in plain JAX, with the associative-retrieval task of its section 4.1.

Each sequence carries, besides its hidden state ``h`` (``[B, H]``), a fast weight matrix ``A`` (``[B, H, H]``):
a decaying sum of outer products of its own past hidden states, i.e. an associative memory of the recent past.
One step maps ``(h(t), A(t))`` and the input ``x(t)`` to ``(h(t+1), A(t+1))``::

  z          = W h(t) + C x(t) + b                       # the slow weights' contribution, fixed in the step
  h_0(t+1)   = f(z)                                      # the preliminary vector
  h_{s+1}(t+1) = f(LN[z + A(t) h_s(t+1)])                # S inner steps (S = 1 in the paper's experiments)
  h(t+1)     = h_S(t+1)
  A(t+1)     = lambda A(t) + eta h(t+1) h(t+1)^T         # lambda ~ 0.95 (decay), eta ~ 0.5 (fast_learning_rate)

with ``f = ReLU`` and ``LN`` layer normalisation over the ``H`` units of each sequence (learned gain and bias).
The carry ``(h(t), A(t))`` always holds the ``A(t)`` that already includes ``h(t) h(t)^T``, so the step that
computes ``h(t+1)`` uses ``A(t)``, as in the paper's equations.

Why this model matters to memjax: the carry is ``H + H^2`` numbers per sequence, and a step's residuals hold
``A(t)`` and the inner loop's activations, so standard BPTT (``jax.lax.scan``) stores ``O(t H^2)`` per sequence.
:func:`unroll` runs the recurrence with :func:`memjax.scan` (or any scan passed in) and gradients flow through
``A`` like through ``h``.

Pitfalls seen in public implementations, avoided here (and tested): one ``A`` shared across the batch instead
of one per sequence; ``A`` updated one step late (``h(t+1)`` computed with ``A(t-1)``); "layer norm" taken over
the batch axis instead of the units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FastWeightsState",
    "init_params",
    "initial_state",
    "layer_norm",
    "step",
    "unroll",
    "logits",
    "loss",
    "accuracy",
    "associative_retrieval",
    "decode",
    "VOCAB",
]

Params = dict  # {"w_hidden", "w_input", "bias", "ln_gain", "ln_bias", "w_out", "b_out"}


class FastWeightsState(NamedTuple):
    """The recurrent state (the scan carry).

    Attributes:
      hidden: ``h(t)``, ``[B, H]``.
      fast: ``A(t)``, ``[B, H, H]``, one matrix per sequence, already including ``eta h(t) h(t)^T``.
    """

    hidden: jax.Array
    fast: jax.Array


def init_params(key: jax.Array, input_size: int, hidden_size: int, output_size: int, dtype=jnp.float32) -> Params:
    """Parameters of the slow weights and of a linear read-out.

    The recurrent matrix ``W`` starts as ``0.05 I`` (the paper's choice for this task), the input matrix ``C``
    and the read-out are Glorot-uniform, layer-norm gain one and bias zero.

    Args:
      key: a PRNG key.
      input_size: ``D``, features per step (the vocabulary size for one-hot tokens).
      hidden_size: ``H``.
      output_size: classes of the read-out.

    Returns:
      A dict of arrays: ``w_hidden [H, H]``, ``w_input [D, H]``, ``bias [H]``, ``ln_gain [H]``, ``ln_bias [H]``,
      ``w_out [H, K]``, ``b_out [K]``.
    """
    k_in, k_out = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_uniform()
    return {
        "w_hidden": 0.05 * jnp.eye(hidden_size, dtype=dtype),
        "w_input": glorot(k_in, (input_size, hidden_size), dtype),
        "bias": jnp.zeros((hidden_size,), dtype),
        "ln_gain": jnp.ones((hidden_size,), dtype),
        "ln_bias": jnp.zeros((hidden_size,), dtype),
        "w_out": glorot(k_out, (hidden_size, output_size), dtype),
        "b_out": jnp.zeros((output_size,), dtype),
    }


def initial_state(batch_size: int, hidden_size: int, dtype=jnp.float32) -> FastWeightsState:
    """``h(0) = 0`` and ``A(0) = 0`` (consistent with ``A(0) = eta h(0) h(0)^T``)."""
    return FastWeightsState(
        jnp.zeros((batch_size, hidden_size), dtype), jnp.zeros((batch_size, hidden_size, hidden_size), dtype)
    )


def layer_norm(z: jax.Array, gain: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Layer normalisation over the last axis (the units of one sequence), never over the batch."""
    mean = jnp.mean(z, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
    return (z - mean) * jax.lax.rsqrt(var + eps) * gain + bias


def step(
    params: Params,
    state: FastWeightsState,
    x: jax.Array,
    *,
    decay: float = 0.95,
    fast_learning_rate: float = 0.5,
    inner_steps: int = 1,
) -> tuple[FastWeightsState, jax.Array]:
    """One step of the recurrence (module docstring): ``((h(t), A(t)), x(t)) -> ((h(t+1), A(t+1)), h(t+1))``.

    Args:
      params: from :func:`init_params`.
      state: ``(h(t), A(t))``.
      x: ``x(t)``, ``[B, D]``.
      decay: ``lambda``.
      fast_learning_rate: ``eta``.
      inner_steps: ``S``, inner iterations with the fast weights (a static Python int).

    Returns:
      ``(new_state, h(t+1))``.
    """
    h, fast = state
    z = h @ params["w_hidden"] + x @ params["w_input"] + params["bias"]
    hs = jax.nn.relu(z)
    for _ in range(inner_steps):
        attended = jnp.einsum("bij,bj->bi", fast, hs)  # A(t) h_s(t+1), one A per sequence
        hs = jax.nn.relu(layer_norm(z + attended, params["ln_gain"], params["ln_bias"]))
    fast = decay * fast + fast_learning_rate * jnp.einsum("bi,bj->bij", hs, hs)
    return FastWeightsState(hs, fast), hs


def unroll(
    params: Params,
    xs: jax.Array,
    state: FastWeightsState | None = None,
    *,
    decay: float = 0.95,
    fast_learning_rate: float = 0.5,
    inner_steps: int = 1,
    scan: Callable | None = None,
    memory=None,
    kind: str = "msm",
) -> tuple[FastWeightsState, jax.Array]:
    """Run the recurrence over ``xs`` (``[T, B, D]``, time major).

    Args:
      params: from :func:`init_params`.
      xs: inputs, ``[T, B, D]``.
      state: the initial state (zeros if ``None``).
      decay, fast_learning_rate, inner_steps: as in :func:`step`.
      scan: the loop, ``scan(f, init, xs) -> (carry, ys)``; ``None`` (default) uses :func:`memjax.scan` with
        ``memory`` and ``kind``. Pass ``jax.lax.scan`` for standard BPTT.
      memory, kind: as in :func:`memjax.scan` (only used when ``scan`` is ``None``).

    Returns:
      ``(final_state, hidden_states)`` with ``hidden_states`` of shape ``[T, B, H]``.
    """
    if state is None:
        state = initial_state(xs.shape[1], params["w_hidden"].shape[0], params["w_hidden"].dtype)

    def body(carry, x):
        return step(params, carry, x, decay=decay, fast_learning_rate=fast_learning_rate, inner_steps=inner_steps)

    if scan is None:
        from memjax._scan import scan as memjax_scan

        return memjax_scan(body, state, xs, memory=memory, kind=kind)
    return scan(body, state, xs)


def logits(params: Params, state: FastWeightsState) -> jax.Array:
    """The read-out of the last hidden state: ``[B, K]``."""
    return state.hidden @ params["w_out"] + params["b_out"]


def loss(params: Params, xs: jax.Array, labels: jax.Array, **unroll_kwargs) -> jax.Array:
    """Mean softmax cross-entropy of the read-out after the whole sequence (``labels``: ``[B]`` ints)."""
    final, _ = unroll(params, xs, **unroll_kwargs)
    log_probs = jax.nn.log_softmax(logits(params, final))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def accuracy(params: Params, xs: jax.Array, labels: jax.Array, **unroll_kwargs) -> jax.Array:
    """Fraction of sequences whose read-out's arg-max is the label."""
    final, _ = unroll(params, xs, **unroll_kwargs)
    return jnp.mean(jnp.argmax(logits(params, final), -1) == labels)


# ---------------------------------------------------------------------------------------------------------------
# Associative retrieval (paper, section 4.1)
# ---------------------------------------------------------------------------------------------------------------

VOCAB = "abcdefghijklmnopqrstuvwxyz0123456789?"
"""Token ``i`` is ``VOCAB[i]`` for the 26 letters, 10 digits and ``?``; with ``num_keys > 26`` keys ``26..``
are extra symbols and the digits and ``?`` move up (see :func:`associative_retrieval`)."""


def associative_retrieval(
    key: jax.Array, batch_size: int, num_pairs: int = 4, num_keys: int = 26, one_hot: bool = True
) -> tuple[jax.Array, jax.Array]:
    """A batch of the associative-retrieval task: ``c9k8j3f1??c`` -> ``8``.

    Each sequence lists ``num_pairs`` distinct keys (letters), each followed by a digit, then ``??`` and one
    of the keys; the target is the digit that followed that key. Sequences are ``2 num_pairs + 3`` long
    (11 for the paper's 4 pairs). Tokens: keys ``0 .. num_keys-1``, digits ``num_keys .. num_keys+9``, ``?`` is
    ``num_keys + 10``: the vocabulary has ``num_keys + 11`` tokens (37 with the default 26 letters).

    Args:
      key: a PRNG key.
      batch_size: sequences in the batch.
      num_pairs: key-digit pairs per sequence (at most ``num_keys``).
      num_keys: size of the key alphabet (26: the letters).
      one_hot: return one-hot ``float32`` inputs ``[T, B, V]`` (time major, ready for :func:`unroll`); else
        ``int32`` tokens ``[B, T]``.

    Returns:
      ``(inputs, targets)``: inputs as above, targets ``int32 [B]`` in ``0..9``.
    """
    if not 1 <= num_pairs <= num_keys:
        raise ValueError(f"num_pairs must be in 1..num_keys={num_keys} (keys are distinct), got {num_pairs}.")
    k_keys, k_digits, k_query = jax.random.split(key, 3)
    keys = jax.vmap(lambda k: jax.random.permutation(k, num_keys)[:num_pairs])(jax.random.split(k_keys, batch_size))
    digits = jax.random.randint(k_digits, (batch_size, num_pairs), 0, 10)
    which = jax.random.randint(k_query, (batch_size,), 0, num_pairs)
    query = jnp.take_along_axis(keys, which[:, None], axis=1)
    targets = jnp.take_along_axis(digits, which[:, None], axis=1)[:, 0]
    question = jnp.full((batch_size, 2), num_keys + 10)
    pairs = jnp.stack([keys, digits + num_keys], axis=-1).reshape(batch_size, 2 * num_pairs)
    tokens = jnp.concatenate([pairs, question, query], axis=1).astype(jnp.int32)
    if not one_hot:
        return tokens, targets.astype(jnp.int32)
    return jax.nn.one_hot(tokens.T, num_keys + 11, dtype=jnp.float32), targets.astype(jnp.int32)


def decode(tokens, num_keys: int = 26) -> str:
    """One sequence of tokens (``[T]`` ints, or one-hot ``[T, V]``) as text, e.g. ``"c9k8j3f1??c"``."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
        tokens = tokens.argmax(-1)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def char(t: int) -> str:
        if t < num_keys:
            return letters[t] if num_keys <= 26 else f"<{t}>"
        if t < num_keys + 10:
            return str(t - num_keys)
        return "?"

    return "".join(char(int(t)) for t in tokens)
