"""The LSTM of the experiments of Gruslys et al. (2016, section 5), in plain JAX: four gates and a cell state.

One step maps the carry ``(h, c)`` (each ``[B, H]``) and an input ``x`` (``[B, D]``) to the next carry::

  i, f, g, o = split(x W + h U + b, 4)       # the gate pre-activations, [B, 4H], named "gates"
  c'         = sigmoid(f) * c + sigmoid(i) * tanh(g)
  h'         = sigmoid(o) * tanh(c')

that is the LSTM of Hochreiter and Schmidhuber (1997) with the forget gate of Gers, Schmidhuber and Cummins
(2000), and no peepholes. The gate pre-activations are tagged ``checkpoint_name(..., "gates")``, an identity
unless a ``jax.checkpoint`` policy reads the name: with
``checkpoint_policy=jax.checkpoint_policies.save_only_these_names("gates")``, :func:`memjax.scan` stores an
internal state as the carry plus these ``4H`` numbers per sequence and recomputes the nonlinearities.

The functions are pure and take the parameters explicitly, so one definition serves ``jax.lax.scan``,
:func:`memjax.scan`, the demo (``python -m memjax demo``), the benchmarks and the tests::

  params = lstm.init_params(key, input_size, hidden_size)
  carry, hs = memjax.scan(functools.partial(lstm.step, params), lstm.initial_carry(batch, hidden_size), xs)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

__all__ = ["init_params", "initial_carry", "step"]

Params = dict  # {"W": [D, 4H], "U": [H, 4H], "b": [4H]}, gates in the order i, f, g, o
Carry = tuple  # (h, c), each [B, H]


def init_params(
    key: jax.Array, input_size: int, hidden_size: int, *, forget_bias: float | None = None, dtype=jnp.float32
) -> Params:
    """Parameters of one LSTM layer, uniform in ``[-1/sqrt(H), 1/sqrt(H)]`` as PyTorch's ``nn.LSTM`` draws them.

    Args:
      key: a PRNG key.
      input_size: ``D``, features per step.
      hidden_size: ``H``, units.
      forget_bias: if given, the bias starts at zero except the forget gate's, which starts at this value
        (1.0 keeps the cell's memory early in training; Jozefowicz, Zaremba and Sutskever, 2015).
      dtype: of every parameter.

    Returns:
      ``{"W": [D, 4H], "U": [H, 4H], "b": [4H]}``: input weights, recurrent weights and bias, the columns of
      each in the gate order ``i, f, g, o``.
    """
    scale = 1.0 / math.sqrt(hidden_size)
    k_input, k_recurrent, k_bias = jax.random.split(key, 3)

    def uniform(key, shape):
        return jax.random.uniform(key, shape, dtype, minval=-scale, maxval=scale)

    if forget_bias is None:
        bias = uniform(k_bias, (4 * hidden_size,))
    else:
        bias = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size : 2 * hidden_size].set(forget_bias)
    return {
        "W": uniform(k_input, (input_size, 4 * hidden_size)),
        "U": uniform(k_recurrent, (hidden_size, 4 * hidden_size)),
        "b": bias,
    }


def initial_carry(batch: int, hidden_size: int, dtype=jnp.float32) -> Carry:
    """The zero state ``(h, c)``.

    Args:
      batch: ``B``, sequences.
      hidden_size: ``H``, units.
      dtype: of both arrays.

    Returns:
      ``(h, c)``, two zero arrays of shape ``[B, H]``.
    """
    return jnp.zeros((batch, hidden_size), dtype), jnp.zeros((batch, hidden_size), dtype)


def step(params: Params, carry: Carry, x: jax.Array, *, gates_name: str | None = "gates") -> tuple[Carry, jax.Array]:
    """One LSTM step, a ``jax.lax.scan`` body once ``params`` is bound (``functools.partial(step, params)``).

    Args:
      params: from :func:`init_params`.
      carry: ``(h, c)``, each ``[B, H]``.
      x: the input, ``[B, D]``.
      gates_name: the ``checkpoint_name`` of the gate pre-activations (``None``: untagged).

    Returns:
      ``((h', c'), h')``: the next carry, and the new hidden state as the step's output.
    """
    h, c = carry
    gates = x @ params["W"] + h @ params["U"] + params["b"]
    if gates_name is not None:
        gates = checkpoint_name(gates, gates_name)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h
