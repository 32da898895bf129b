"""``memjax.flax.RNN``: ``flax.linen.RNN`` whose gradient runs :func:`memjax.scan` within a memory budget.

The module imports Flax at its top: :mod:`memjax.flax` imports it only when ``memjax.flax.RNN`` is first used,
so that ``import memjax.flax`` keeps working without Flax.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.recurrent import _expand_dims_like, flip_sequences

from memjax._flax_linen import scan as _scan

__all__ = ["RNN"]


class RNN(nn.RNN):
    """``flax.linen.RNN`` whose gradient stores at most ``memory`` and recomputes the rest (Gruslys et al., 2016).

    A drop-in for ``nn.RNN``: it is a subclass with the same fields, call signature and parameter tree (the
    cell is the submodule ``"cell"``), so parameters move freely between the two, and it returns the same
    values and gradients. What differs is only memory: the loop is :func:`memjax.flax.scan`, whose reverse pass
    stores at most ``memory`` of hidden and internal states along the optimal schedule of ``kind`` and
    recomputes the rest, where ``nn.RNN`` stores every step's residuals.

    Example::

      lstm = memjax.flax.RNN(nn.LSTMCell(64), memory="5%")   # in place of nn.RNN(nn.LSTMCell(64))
      variables = lstm.init(jax.random.key(0), xs)          # xs: [batch, time, features]
      carry, ys = lstm.apply(variables, xs, seq_lengths=lengths, return_carry=True)

    Args:
      cell, time_major, return_carry, reverse, keep_order, unroll, variable_axes, variable_broadcast,
        variable_carry, split_rngs: as in ``flax.linen.RNN`` (the last four are forwarded to the scan, with
        ``nn.scan``'s meaning and random streams).
      memory: the budget of :func:`memjax.scan`: bytes, a string such as ``"64MiB"`` or ``"5%"``, a fraction
        of what standard BPTT stores, or ``None`` (at most one extra forward pass).
      kind: the policy of :func:`memjax.scan` (``"msm"``, ``"hsm"``, ``"ism"``, ``"chen"``, ``"store_all"``,
        ``"recompute"``, ``"auto"``).
      checkpoint_policy: as in :func:`memjax.scan`.

    .. note::
      With ``seq_lengths`` and ``return_carry=True``, ``nn.RNN`` returns every step's carry as an output and
      picks each sequence's last valid one afterwards, which stores ``T`` carries whatever the budget. Here
      the loop carries a second copy, frozen at each sequence's last step, so the carry is twice as large but
      nothing grows with ``T``; outputs past a sequence's end are the running cell's, as in ``nn.RNN``.
    """

    memory: Any = None
    kind: str = "msm"
    checkpoint_policy: Any = None

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        init_key: jax.Array | None = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ):
        """Apply the cell over the time axis of ``inputs``, as ``nn.RNN.__call__``.

        Args:
          inputs: ``(*batch, time, *features)``, or ``(time, *batch, *features)`` when ``time_major``.
          initial_carry: the initial carry; default ``cell.initialize_carry(init_key, ...)``.
          init_key: the key for ``initialize_carry``; default ``jax.random.key(0)``.
          seq_lengths: optional integers of shape ``(*batch)``: steps at and past a sequence's length are
            padding. Their outputs are not zeroed, and with ``reverse`` the padding stays at the end.
          return_carry, time_major, reverse, keep_order: override the fields of the same names.

        Returns:
          The outputs, ``(*batch, time, *features)`` (or time major); with ``return_carry``, the pair
          ``(carry, outputs)`` whose carry is each sequence's carry after its last valid step.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order

        # The cell's feature axes (three for ConvLSTMCell) sit after the time axis; the batch axes before it.
        time_axis = 0 if time_major else inputs.ndim - (self.cell.num_feature_axes + 1)
        batch_dims = inputs.shape[1 : -self.cell.num_feature_axes] if time_major else inputs.shape[:time_axis]
        steps = inputs.shape[time_axis]

        def flip(tree):
            return jax.tree_util.tree_map(
                lambda x: flip_sequences(x, seq_lengths, num_batch_dims=len(batch_dims), time_major=time_major), tree
            )

        if reverse:
            inputs = flip(inputs)
        if initial_carry is None:
            input_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :]
            initial_carry = self.cell.initialize_carry(jax.random.key(0) if init_key is None else init_key, input_shape)
        scan = functools.partial(
            _scan,
            out_axes=time_axis,
            unroll=self.unroll,
            variable_axes=self.variable_axes,
            variable_broadcast=self.variable_broadcast,
            variable_carry=self.variable_carry,
            split_rngs=self.split_rngs,
            memory=self.memory,
            kind=self.kind,
            checkpoint_policy=self.checkpoint_policy,
        )
        if seq_lengths is None or not return_carry:
            carry, outputs = scan(_step, in_axes=time_axis)(self.cell, initial_carry, inputs)
        else:
            # The step whose carry nn.RNN returns, with its indexing's wrap-around and clamping, so that even
            # lengths of 0 or past the end give nn.RNN's carry; exactly one step of each sequence matches.
            last_step = jnp.arange(steps)[jnp.asarray(seq_lengths) - 1]
            is_last = jnp.arange(steps).reshape((steps,) + (1,) * last_step.ndim) == last_step
            scanned = scan(_step_keeping_last, in_axes=(time_axis, 0))
            (_, carry), outputs = scanned(self.cell, (initial_carry, initial_carry), inputs, is_last)

        if reverse and keep_order:
            outputs = flip(outputs)
        return (carry, outputs) if return_carry else outputs


def _step(cell: nn.RNNCellBase, carry, x):
    """One step of ``nn.RNN``'s loop."""
    return cell(carry, x)


def _step_keeping_last(cell: nn.RNNCellBase, carries, x, is_last):
    """One step that also keeps, in a second carry, each sequence's carry after its last valid step.

    The running carry is never masked: the outputs past a sequence's end are those of ``nn.RNN``.
    """
    carry, frozen = carries
    carry, y = cell(carry, x)
    frozen = jax.tree_util.tree_map(
        lambda new, old: jnp.where(_expand_dims_like(is_last, new), new, old), carry, frozen
    )
    return (carry, frozen), y
