"""Haiku adapters: :func:`scan` (for ``hk.scan``), :func:`dynamic_unroll` and :func:`static_unroll` (for
``hk.dynamic_unroll`` and ``hk.static_unroll``), and :func:`explain`, the report for a core.

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

Any core works: ``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN``, stacks (``hk.DeepRNN``,
``hk.deep_rnn_with_skip_connections``), ``hk.ResetCore``, or a callable ``(inputs, state) -> (outputs, state)``,
with nested inputs and states.

During ``init`` (parameters not yet frozen) the adapters call ``hk.scan`` itself, which creates parameters and
state exactly as Haiku does; ``init`` is never differentiated.

.. note::
  Haiku offers no public hook to run a step with the caller's frame inside another JAX transformation
  (``hk.lift`` cannot close over modules built outside it, as ``hk.dynamic_unroll``'s core is). These
  adapters use the same few internals as ``hk.scan`` (``haiku._src.stateful``), isolated in
  :func:`_internals` and :func:`_frame_step`; Haiku is in maintenance mode, and the tests pin the behaviour to
  ``hk.scan``'s, ``hk.dynamic_unroll``'s and ``hk.static_unroll``'s.

Haiku is imported lazily: ``import memjax.haiku`` works without it and the first call raises an
``ImportError`` that says to ``pip install memjax[haiku]``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from memjax._explain import Explanation
from memjax._explain import explain as _memjax_explain
from memjax._scan import scan as _memjax_scan

__all__ = ["dynamic_unroll", "explain", "scan", "static_unroll"]


def _internals():
    try:
        import haiku as hk
        from haiku._src import base, stateful
    except ImportError as error:  # pragma: no cover - exercised only without haiku
        raise ImportError("memjax.haiku needs Haiku: pip install memjax[haiku] (or pip install dm-haiku).") from error
    return hk, base, stateful


def _frame_step(f: Callable, init):
    """``f`` as a pure step over ``(carry, frame state)``, and that scan's initial carry.

    The frame state is Haiku's state and RNG sequence (not the parameters: they are frozen and closed over).
    As in ``hk.scan``, a full block of RNG keys is reserved before and after each step, so that the carry keeps
    one structure. Call it inside a transform with parameters frozen (or already created).
    """
    _, base, stateful = _internals()

    def step(carry, x):
        carry, frame_state = carry
        with stateful.temporary_internal_state(frame_state):
            with base.assert_no_new_parameters(), base.push_jax_trace_level():
                carry, y = f(carry, x)
            stateful.reserve_up_to_full_rng_block()
            return (carry, stateful.internal_state(params=False)), y

    stateful.reserve_up_to_full_rng_block()
    return step, (init, stateful.internal_state(params=False))


def scan(
    f: Callable,
    init,
    xs=None,
    length: int | None = None,
    reverse: bool = False,
    unroll: int = 1,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
):
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
    step, carry = _frame_step(f, init)
    (carry, frame_state), ys = _memjax_scan(
        step,
        carry,
        xs,
        length=length,
        reverse=reverse,
        unroll=unroll,
        memory=memory,
        kind=kind,
        checkpoint_policy=checkpoint_policy,
    )
    stateful.update_internal_state(frame_state)
    return carry, ys


def _swap_batch_time(tree):
    return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def _core_step(core: Callable, return_all_states: bool = False):
    """``core(inputs, state) -> (outputs, state)`` as a scan step ``(state, inputs) -> (state, ys)``."""

    def step(state, inputs):
        outputs, state = core(inputs, state)
        return state, ((outputs, state) if return_all_states else outputs)

    return step


def dynamic_unroll(
    core: Callable,
    input_sequence,
    initial_state,
    time_major: bool = True,
    reverse: bool = False,
    return_all_states: bool = False,
    unroll: int = 1,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
):
    """``hk.dynamic_unroll`` whose gradient runs :func:`memjax.scan`'s schedule within ``memory``.

    Performs ``outputs, state = core(input, state)`` for every input of the sequence, as
    ``hk.dynamic_unroll``, with the same arguments and results. Outside a transform (a core that is a plain
    function), it runs :func:`memjax.scan` where ``hk.dynamic_unroll`` runs ``jax.lax.scan``.

    Args:
      core: a recurrent core (``hk.RNNCore`` such as ``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN``, ``hk.DeepRNN``,
        ``hk.ResetCore``, or any callable ``(inputs, state) -> (outputs, state)``).
      input_sequence: a pytree of arrays ``[T, ...]`` (``[B, T, ...]`` if not ``time_major``).
      initial_state: the core's initial state (a pytree).
      time_major, reverse, return_all_states, unroll: as in ``hk.dynamic_unroll``.
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      ``(output_sequence, final_state)``, or ``(output_sequence, state_sequence)`` if ``return_all_states``;
      sequences are time-major if ``time_major``, else batch-major.
    """
    _, base, _ = _internals()
    run = scan if base.inside_transform() else _memjax_scan
    if not time_major:
        input_sequence = _swap_batch_time(input_sequence)
    last_state, outputs = run(
        _core_step(core, return_all_states),
        initial_state,
        input_sequence,
        reverse=reverse,
        unroll=unroll,
        memory=memory,
        kind=kind,
        checkpoint_policy=checkpoint_policy,
    )
    if not time_major:
        outputs = _swap_batch_time(outputs)
    return outputs if return_all_states else (outputs, last_state)


def static_unroll(
    core: Callable,
    input_sequence,
    initial_state,
    time_major: bool = True,
    return_all_states: bool = False,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
):
    """``hk.static_unroll``, run as a loop whose gradient stores at most ``memory``.

    ``hk.static_unroll`` repeats the core's body once per step in Python, so its gradient stores every step's
    residuals and nothing bounds them. This replacement runs the same steps with :func:`memjax.scan` (it is
    :func:`dynamic_unroll` without ``reverse`` and ``unroll``); values and gradients equal
    ``hk.static_unroll``'s to float round-off.

    Args:
      core, input_sequence, initial_state, time_major: as in ``hk.static_unroll``.
      return_all_states: as in :func:`dynamic_unroll` (``hk.static_unroll`` of dm-haiku 0.0.17 has no such
        argument; ``False`` gives its results).
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      ``(output_sequence, final_state)``, or ``(output_sequence, state_sequence)`` if ``return_all_states``.
    """
    return dynamic_unroll(
        core,
        input_sequence,
        initial_state,
        time_major,
        return_all_states=return_all_states,
        memory=memory,
        kind=kind,
        checkpoint_policy=checkpoint_policy,
    )


def _core_title(core: Callable) -> str:
    name = getattr(core, "module_name", None)
    kind = type(core).__name__ if name is not None else getattr(core, "__name__", type(core).__name__)
    return f"{kind} {name!r} (haiku)" if name is not None else f"{kind} (haiku)"


def explain(
    core: Callable,
    input_sequence,
    initial_state,
    *,
    time_major: bool = True,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
    verbose: bool = True,
) -> Explanation:
    """:func:`memjax.explain` for the step :func:`dynamic_unroll` would run: what its gradient stores and
    recomputes for this core, sequence and budget, titled with the core's module.

    Call it inside ``hk.transform``, where :func:`dynamic_unroll` would go. Nothing is run in ``apply``: the
    step is traced abstractly, and the caller's state and RNG sequence are left as they were. In ``init``,
    the parameters the report needs do not exist yet: the core runs once on the first inputs, as ``hk.scan``'s
    ``init`` does, which creates them (and the core's state) as :func:`dynamic_unroll` would.

    The carry measured is the core's state plus the Haiku state and RNG keys the frame carries (none under
    ``hk.transform`` applied with ``rng=None``).

    Args:
      core, input_sequence, initial_state, time_major: as in :func:`dynamic_unroll`.
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.
      verbose: print the report.

    Returns:
      An :class:`memjax.Explanation` whose ``title`` names the core.
    """
    _, base, stateful = _internals()
    if not base.inside_transform():
        raise ValueError("memjax.haiku.explain must be called inside hk.transform(); outside it, use memjax.explain.")
    if not time_major:
        input_sequence = _swap_batch_time(input_sequence)
    step = _core_step(core)
    if not base.params_frozen():
        step(initial_state, jax.tree_util.tree_map(lambda a: a[0], input_sequence))
    with stateful.temporary_internal_state(stateful.internal_state()):  # the caller's frame stays as it was
        explanation = _memjax_explain(
            *_frame_step(step, initial_state),
            input_sequence,
            memory=memory,
            kind=kind,
            checkpoint_policy=checkpoint_policy,
            verbose=verbose,
            title=_core_title(core),
        )
    return explanation
