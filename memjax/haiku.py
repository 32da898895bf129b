"""Haiku adapters: :func:`scan` (for ``hk.scan``) and :func:`dynamic_unroll` (for ``hk.dynamic_unroll``).

Inside ``hk.transform`` a step may call Haiku modules, which read parameters and state from Haiku's frame and
draw keys from its RNG sequence. These adapters thread that frame state through :func:`memjax.scan` the way
``hk.scan`` threads it through ``jax.lax.scan``: parameters are closed over (so their gradients flow), state
and the RNG sequence travel in the carry. The gradient then stores at most ``memory`` bytes and recomputes the
rest along the optimal schedule of ``kind`` (Gruslys et al., NeurIPS 2016); values and gradients are those
of ``hk.scan``::

  def forward(xs):                                   # xs: [time, batch, features]
    core = hk.LSTM(256)
    ys, _ = memjax.haiku.dynamic_unroll(core, xs, core.initial_state(xs.shape[1]), memory="5%")
    return ys

  model = hk.transform(forward)                      # same parameters as with hk.dynamic_unroll

During ``init`` (parameters not yet frozen) the adapters call ``hk.scan`` itself, which creates parameters and
state exactly as Haiku does; ``init`` is never differentiated.

.. note::
  Haiku offers no public hook to run a step with the caller's frame inside another JAX transformation
  (``hk.lift`` cannot close over modules built outside it, as ``hk.dynamic_unroll``'s core is). These
  adapters use the same few internals as ``hk.scan`` (``haiku._src.stateful``), isolated in
  :func:`_internals`; Haiku is in maintenance mode, and the tests pin the behaviour to ``hk.scan``'s.

Haiku is imported lazily: ``import memjax.haiku`` works without it and the first call raises an
``ImportError`` that says to ``pip install memjax[haiku]``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from memjax._scan import scan as _memjax_scan

__all__ = ["scan", "dynamic_unroll"]


def _internals():
    try:
        import haiku as hk
        from haiku._src import base, stateful
    except ImportError as error:  # pragma: no cover - exercised only without haiku
        raise ImportError("memjax.haiku needs Haiku: pip install memjax[haiku] (or pip install dm-haiku).") from error
    return hk, base, stateful


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False, unroll: int = 1, *,
         memory=None, kind: str = "msm", checkpoint_policy=None):
    """``hk.scan`` whose gradient runs :func:`memjax.scan`'s schedule within ``memory``.

    Use it inside ``hk.transform`` / ``hk.transform_with_state`` wherever ``hk.scan`` would go: ``f`` may
    create and call Haiku modules, read and write state (``hk.get_state``/``hk.set_state``) and draw keys
    (``hk.next_rng_key``; every step draws fresh keys, as with ``hk.scan``).

    Args:
      f, init, xs, length, reverse, unroll: as in ``hk.scan`` / ``jax.lax.scan``.
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      ``(carry, ys)``.

    Raises:
      ValueError: outside a Haiku transform (use :func:`memjax.scan` there).
    """
    hk, base, stateful = _internals()
    if not base.inside_transform():
        raise ValueError("memjax.haiku.scan must be called inside hk.transform(); outside it, use memjax.scan.")
    if not base.params_frozen():  # init: Haiku's own scan creates parameters and state
        return hk.scan(f, init, xs, length=length, reverse=reverse, unroll=unroll)

    def step(carry, x):
        carry, frame_state = carry
        with stateful.temporary_internal_state(frame_state):
            with base.assert_no_new_parameters(), base.push_jax_trace_level():
                carry, y = f(carry, x)
            stateful.reserve_up_to_full_rng_block()
            return (carry, stateful.internal_state(params=False)), y

    # As hk.scan: a full block of RNG keys is reserved so that the carry keeps one structure.
    stateful.reserve_up_to_full_rng_block()
    (carry, frame_state), ys = _memjax_scan(
        step, (init, stateful.internal_state(params=False)), xs, length=length, reverse=reverse,
        unroll=unroll, memory=memory, kind=kind, checkpoint_policy=checkpoint_policy)
    stateful.update_internal_state(frame_state)
    return carry, ys


def _swap_batch_time(tree):
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def dynamic_unroll(core: Callable, input_sequence, initial_state, time_major: bool = True, reverse: bool = False,
                   return_all_states: bool = False, unroll: int = 1, *, memory=None, kind: str = "msm",
                   checkpoint_policy=None):
    """``hk.dynamic_unroll`` whose gradient runs :func:`memjax.scan`'s schedule within ``memory``.

    Performs ``outputs, state = core(input, state)`` for every input of the sequence, as
    ``hk.dynamic_unroll``, with the same arguments and results.

    Args:
      core: a recurrent core (``hk.RNNCore`` such as ``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN``, ``hk.DeepRNN``
        or any callable ``(inputs, state) -> (outputs, state)``).
      input_sequence: a pytree of arrays ``[T, ...]`` (``[B, T, ...]`` if not ``time_major``).
      initial_state: the core's initial state.
      time_major, reverse, return_all_states, unroll: as in ``hk.dynamic_unroll``.
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      ``(output_sequence, final_state)``, or ``(output_sequence, state_sequence)`` if ``return_all_states``.
    """

    def step(state, inputs):
        outputs, state = core(inputs, state)
        return state, ((outputs, state) if return_all_states else outputs)

    if not time_major:
        input_sequence = _swap_batch_time(input_sequence)
    last_state, outputs = scan(step, initial_state, input_sequence, reverse=reverse, unroll=unroll, memory=memory,
                               kind=kind, checkpoint_policy=checkpoint_policy)
    if return_all_states:
        outputs, states = outputs
    if not time_major:
        outputs = _swap_batch_time(outputs)
        if return_all_states:
            states = _swap_batch_time(states)
    return (outputs, states) if return_all_states else (outputs, last_state)
