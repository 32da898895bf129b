"""Flax adapters: :func:`scan` (for ``flax.linen.scan``), :func:`nnx_scan` (NNX), ``RNN`` and ``NNXRNN`` (for
``flax.linen.RNN`` and ``flax.nnx.RNN``), and :func:`explain` for a cell or an RNN wrapper.

All run the recurrence with :func:`memjax.scan`, so that the gradient stores at most ``memory`` bytes of
hidden and internal states and recomputes the rest along the optimal schedule of ``kind`` (Gruslys et al.,
NeurIPS 2016). Values and gradients are those of ``nn.scan`` / ``nnx.scan``.

Linen::

  import flax.linen as nn
  import memjax.flax

  LSTM = memjax.flax.scan(nn.LSTMCell, variable_broadcast="params", split_rngs={"params": False},
                          in_axes=1, out_axes=1, memory="10%")
  # exactly where nn.scan(nn.LSTMCell, ...) would go; the parameter tree is the same.

NNX::

  cell = nnx.LSTMCell(8, 32, rngs=nnx.Rngs(0))
  carry, ys = memjax.flax.nnx_scan(cell, carry, xs, memory="10%")   # ys[t] = cell(carry, xs[t])[1]

Flax is imported lazily: ``import memjax.flax`` works without it, and the first call raises an ``ImportError``
that says to ``pip install memjax[flax]``.
"""

from __future__ import annotations

import jax
import numpy as np

from memjax._flax_linen import _flax, scan
from memjax._flax_nnx import _call, _nnx_step, nnx_scan

__all__ = ["scan", "nnx_scan", "explain", "RNN", "NNXRNN"]  # noqa: F822 (RNN, NNXRNN: from __getattr__)


# ---------------------------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------------------------


def explain(
    module,
    carry,
    xs,
    variables=None,
    *,
    memory=None,
    kind: str | None = None,
    checkpoint_policy=None,
    executor: str = "auto",
    verbose: bool = True,
):
    """:func:`memjax.explain` for a Flax recurrent cell: what the gradient will store and recompute.

    Nothing runs: the cell's step is traced abstractly, so ``carry`` and ``xs`` may be arrays or
    ``jax.ShapeDtypeStruct``. The report is the one for the loop :func:`scan` / :func:`nnx_scan` (and the RNN
    wrappers) run with the same ``memory`` and ``kind``, and its first line names the cell.

    Example::

      cell = nn.LSTMCell(features=256)
      x0 = jnp.zeros((64, 256))
      carry = cell.initialize_carry(jax.random.key(0), x0.shape)
      variables = cell.init(jax.random.key(1), carry, x0)
      xs = jax.ShapeDtypeStruct((1000, 64, 256), jnp.float32)      # [time, batch, features]
      memjax.flax.explain(cell, carry, xs, variables, memory="5%")
      # NNX: memjax.flax.explain(nnx_cell, carry, xs, memory="5%")

    Args:
      module: a Linen cell (with ``variables``) or an NNX module called as ``module(carry, x)``; or an RNN
        wrapper (:class:`RNN`, :class:`NNXRNN`, ``flax.linen.RNN``, ``flax.nnx.RNN``), whose cell is explained.
      carry: the initial carry; ``None`` for an RNN wrapper: the cell's ``initialize_carry``, as the wrapper.
      xs: the inputs, time first: ``[time, *batch, *features]``; for an RNN wrapper, as it takes them.
      variables: the Linen module's variables (``module.init(...)``); must be ``None`` for an NNX module.
      memory, kind, checkpoint_policy: as in :func:`memjax.explain`; for memjax's RNN wrappers, the
        wrapper's own by default.
      executor, verbose: as in :func:`memjax.explain`.

    Returns:
      A :class:`memjax.Explanation`.

    Raises:
      TypeError: if ``module`` is not a Flax module, or ``variables`` is missing for a Linen cell or given
        for an NNX module.
    """
    _flax()
    import flax.linen as nn
    from flax import nnx

    from memjax._explain import explain as _explain

    # memjax's RNN wrappers carry their own memory, kind and checkpoint_policy: the defaults here.
    options = dict(
        memory=getattr(module, "memory", None) if memory is None else memory,
        kind=kind or getattr(module, "kind", "msm"),
        checkpoint_policy=checkpoint_policy or getattr(module, "checkpoint_policy", None),
        executor=executor,
    )
    name = type(module).__name__
    if isinstance(module, (nn.RNN, nnx.RNN)):  # explain its cell, over the inputs moved to time-major
        if isinstance(module, nn.RNN) and variables is not None:
            variables = {collection: tree["cell"] for collection, tree in variables.items() if "cell" in tree}
        module, xs, carry = _rnn_cell(module, carry, xs)
        name = f"{name} of {type(module).__name__}"
    if isinstance(module, nn.Module):
        if variables is None:
            raise TypeError(
                f"memjax.flax.explain: variables is required for the Linen module {name}: pass "
                f"the variables that {name}.init returned (explain(cell, carry, xs, variables))."
            )
        step, init, title = (lambda c, x: module.apply(variables, c, x)), carry, f"{name} (flax.linen)"
    elif isinstance(module, nnx.Module):
        if variables is not None:
            raise TypeError(
                f"memjax.flax.explain: variables must be None for the NNX module {name}, whose "
                f"variables live in the module itself."
            )
        step, rest = _nnx_step(module, _call)
        init, title = (rest, carry), f"{name} (flax.nnx)"
    else:
        raise TypeError(f"memjax.flax.explain: module must be a flax.linen or flax.nnx Module, got {name}.")
    return _explain(step, init, xs, verbose=verbose, title=title, **options)


def _rnn_cell(rnn, carry, inputs):
    """An RNN wrapper's cell, its inputs time-major, and its carry (the cell's initial one when ``None``, as the
    wrapper makes it)."""
    from flax import nnx

    cell = rnn.cell
    time_axis = 0 if rnn.time_major else np.ndim(inputs) - (cell.num_feature_axes + 1)
    xs = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((x.shape[time_axis],) + x.shape[:time_axis] + x.shape[time_axis + 1 :], x.dtype),
        inputs,
    )
    if carry is None:
        input_shape = np.shape(inputs)[:time_axis] + np.shape(inputs)[time_axis + 1 :]
        key = jax.random.key(0)
        carry = jax.eval_shape(
            lambda: cell.initialize_carry(
                *((input_shape, nnx.Rngs(key)) if isinstance(cell, nnx.Module) else (key, input_shape))
            )
        )
    return cell, xs, carry


def __getattr__(name: str):
    # The RNN wrappers subclass Flax's own, so they are defined only when asked for: importing memjax.flax
    # needs no Flax.
    if name == "RNN":
        _flax()
        from memjax._flax_rnn import RNN

        return RNN
    if name == "NNXRNN":
        _flax()
        from memjax._nnx_rnn import NNXRNN

        return NNXRNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
