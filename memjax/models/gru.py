"""A GRU (Cho et al., 2014) in plain JAX, in PyTorch's convention: three gates and no cell state.

One step maps the hidden state ``h`` (``[B, H]``) and an input ``x`` (``[B, D]``) to the next::

  x_r, x_z, x_n = split(x W + b, 3)          # the input's pre-activations, [B, 3H], named "gates"
  u_r, u_z, u_n = split(h U, 3)              # the recurrent ones, [B, 3H], named "gates"
  r  = sigmoid(x_r + u_r)                    # reset gate
  z  = sigmoid(x_z + u_z)                    # update gate
  n  = tanh(x_n + r * (u_n + bu))            # candidate: the reset gate scales U_n h + bu (PyTorch's b_hn)
  h' = (1 - z) * n + z * h

Both pre-activations are tagged ``checkpoint_name(..., "gates")`` (see :mod:`memjax.models.lstm`). The carry is
``h`` itself and the step's output is ``h'``::

  params = gru.init_params(key, input_size, hidden_size)
  h, hs = memjax.scan(functools.partial(gru.step, params), gru.initial_carry(batch, hidden_size), xs)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

__all__ = ["init_params", "initial_carry", "step"]

Params = dict  # {"W": [D, 3H], "U": [H, 3H], "b": [3H], "bu": [H]}, gates in the order r, z, n


def init_params(key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32) -> Params:
    """Parameters of one GRU layer: weights and input bias uniform in ``[-1/sqrt(H), 1/sqrt(H)]`` (PyTorch's
    ``nn.GRU`` draw), the candidate's recurrent bias ``bu`` zero.

    Args:
      key: a PRNG key.
      input_size: ``D``, features per step.
      hidden_size: ``H``, units.
      dtype: of every parameter.

    Returns:
      ``{"W": [D, 3H], "U": [H, 3H], "b": [3H], "bu": [H]}``: input weights, recurrent weights, input bias
      (gate order ``r, z, n``) and the bias added to ``U_n h`` inside the reset gate's product.
    """
    scale = 1.0 / math.sqrt(hidden_size)
    k_input, k_recurrent, k_bias = jax.random.split(key, 3)

    def uniform(key, shape):
        return jax.random.uniform(key, shape, dtype, minval=-scale, maxval=scale)

    return {
        "W": uniform(k_input, (input_size, 3 * hidden_size)),
        "U": uniform(k_recurrent, (hidden_size, 3 * hidden_size)),
        "b": uniform(k_bias, (3 * hidden_size,)),
        "bu": jnp.zeros((hidden_size,), dtype),
    }


def initial_carry(batch: int, hidden_size: int, dtype=jnp.float32) -> jax.Array:
    """The zero state.

    Args:
      batch: ``B``, sequences.
      hidden_size: ``H``, units.
      dtype: of the state.

    Returns:
      ``h``, zeros of shape ``[B, H]``.
    """
    return jnp.zeros((batch, hidden_size), dtype)


def step(
    params: Params, carry: jax.Array, x: jax.Array, *, gates_name: str | None = "gates"
) -> tuple[jax.Array, jax.Array]:
    """One GRU step, a ``jax.lax.scan`` body once ``params`` is bound (``functools.partial(step, params)``).

    Args:
      params: from :func:`init_params`.
      carry: ``h``, ``[B, H]``.
      x: the input, ``[B, D]``.
      gates_name: the ``checkpoint_name`` of both pre-activations (``None``: untagged).

    Returns:
      ``(h', h')``: the next carry, and the same as the step's output.
    """
    h = carry
    hidden = h.shape[-1]
    gx = x @ params["W"] + params["b"]
    gh = h @ params["U"]
    if gates_name is not None:
        gx, gh = checkpoint_name(gx, gates_name), checkpoint_name(gh, gates_name)
    r = jax.nn.sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = jax.nn.sigmoid(gx[..., hidden : 2 * hidden] + gh[..., hidden : 2 * hidden])
    n = jnp.tanh(gx[..., 2 * hidden :] + r * (gh[..., 2 * hidden :] + params["bu"]))
    h = (1 - z) * n + z * h
    return h, h
