"""``NNXRNN``: ``flax.nnx.RNN`` whose loop is :func:`memjax.scan`.

Values, gradients, the state tree and every argument are ``nnx.RNN``'s; what differs is only what the gradient
stores: at most ``memory`` bytes of hidden and internal states, the rest recomputed along the optimal schedule of
``kind`` (Gruslys et al., NeurIPS 2016).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.recurrent import _expand_dims_like, flip_sequences

from memjax._scan import scan as _memjax_scan

__all__ = ["NNXRNN"]

# Loop constants of the carried state: the cell reads them and never writes them, so closing over them spares the
# budget a copy of every parameter in each stored carry. Their gradients flow as through any closed-over array.
_CONSTANT = nnx.Any(nnx.Param, nnx.RngKey)


class NNXRNN(nnx.RNN):
    """``flax.nnx.RNN`` with memory-efficient, exact gradients: the time loop runs :func:`memjax.scan`.

    A subclass of ``nnx.RNN``: the constructor takes the same arguments and builds the same state, and
    ``__call__`` has the same signature and returns the same values (``seq_lengths``, ``return_carry``,
    ``reverse`` and ``keep_order`` with ``flip_sequences``' padding rules, ``time_major``, ``initial_carry``,
    ``rngs``, ``unroll``, ``state_axes`` and ``broadcast_rngs``). Only the gradient's memory differs.

    Example::

      cell = nnx.LSTMCell(8, 32, rngs=nnx.Rngs(0))
      rnn = memjax.flax.NNXRNN(cell, return_carry=True, memory="5%")   # where nnx.RNN(cell, ...) would go
      carry, ys = rnn(xs, seq_lengths=lengths)                         # xs: [batch, time, 8]
      grads = nnx.grad(lambda rnn: (rnn(xs) ** 2).mean())(rnn)

    Args:
      cell, time_major, return_carry, reverse, keep_order, unroll, state_axes, broadcast_rngs, rngs: as in
        ``flax.nnx.RNN``.
      memory: the budget of :func:`memjax.scan` (bytes, ``"64MiB"``, ``"5%"``, or a fraction of what standard
        BPTT stores).
      kind: the policy of :func:`memjax.scan` (``"msm"``, ``"hsm"``, ``"chen"``, ``"auto"``, ...).
      checkpoint_policy: as in :func:`memjax.scan`.

    .. note::
      With ``seq_lengths`` and ``return_carry``, ``nnx.RNN`` stacks the carry of every step and then picks each
      sequence's last valid one, which keeps ``length`` carries alive. Here the loop carries instead a second
      copy of the carry, frozen per batch element after its last valid step: the same final carry, for one more
      carry in each stored state. Parameters and RNG keys of ``nnx.Carry`` state are closed over as loop
      constants rather than carried, so that stored states do not hold copies of them.
    """

    def __init__(
        self,
        cell,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        state_axes=None,
        broadcast_rngs=None,
        rngs=True,
        memory=None,
        kind: str = "msm",
        checkpoint_policy=None,
    ):
        super().__init__(
            cell,
            time_major=time_major,
            return_carry=return_carry,
            reverse=reverse,
            keep_order=keep_order,
            unroll=unroll,
            state_axes=state_axes,
            broadcast_rngs=broadcast_rngs,
            rngs=rngs,
        )
        self.memory = memory
        self.kind = kind
        self.checkpoint_policy = checkpoint_policy

    def __call__(
        self,
        inputs,
        *,
        initial_carry=None,
        seq_lengths=None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs=None,
    ):
        """Runs the cell over ``inputs``, as ``nnx.RNN.__call__``.

        Args:
          inputs, initial_carry, seq_lengths, return_carry, time_major, reverse, keep_order, rngs: as in
            ``flax.nnx.RNN.__call__``; ``None`` takes the constructor's value.

        Returns:
          ``outputs`` (time along the axis it has in ``inputs``), or ``(carry, outputs)`` when ``return_carry``;
          with ``seq_lengths``, ``carry`` is each sequence's after its last valid step.

        Raises:
          ValueError: if the cell assigns to a parameter or RNG key of its ``nnx.Carry`` state, or from
            :func:`memjax.scan` for a bad ``memory`` or ``kind``.
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order

        # The cell's feature axes are last, the time axis right before them (ConvLSTM has several feature axes).
        time_axis = 0 if time_major else inputs.ndim - (self.cell.num_feature_axes + 1)
        time_axis %= inputs.ndim
        num_batch_dims = inputs.ndim - 1 - self.cell.num_feature_axes
        flip = functools.partial(
            flip_sequences, seq_lengths=seq_lengths, num_batch_dims=num_batch_dims, time_major=time_major
        )
        if reverse:
            inputs = jax.tree_util.tree_map(flip, inputs)  # padding stays at the end: the scan always runs forward
        if rngs is None:
            rngs = self.rngs
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs.carry.fork()
        if initial_carry is None:
            initial_carry = self.cell.initialize_carry(inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :], rngs)

        state_axes = nnx.StateAxes({nnx.All(nnx.RngState, self.broadcast_rngs): None, **self.state_axes})
        loop = functools.partial(
            _scan,
            time_axis=time_axis,
            state_axes=state_axes,
            seq_lengths=seq_lengths if return_carry else None,
            unroll=self.unroll,
            memory=self.memory,
            kind=self.kind,
            checkpoint_policy=self.checkpoint_policy,
        )
        # Broadcast streams get a fresh key per call, as in nnx.RNN, so every step draws the same numbers.
        loop = nnx.split_rngs(splits=1, only=self.broadcast_rngs, squeeze=True)(loop)
        carry, outputs = loop(self.cell, initial_carry, inputs)
        if reverse and keep_order:
            outputs = jax.tree_util.tree_map(flip, outputs)
        return (carry, outputs) if return_carry else outputs


def _scan(cell, carry, inputs, *, time_axis, state_axes, seq_lengths, unroll, memory, kind, checkpoint_policy):
    """``carry, ys`` of ``cell`` over ``inputs`` along ``time_axis``, with ``nnx.RNN``'s ``state_axes``.

    State of axis ``None`` is closed over (what a step writes to it is dropped, as by ``nnx.scan``), state of an
    integer axis is scanned over and comes back stacked, ``nnx.Carry`` state travels in the loop's carry (less
    ``_CONSTANT``, closed over). Given ``seq_lengths``, the returned carry is each sequence's at its last valid
    step, with ``nnx.RNN``'s indexing: length 0 and lengths past the end select the last step.
    """
    filters, axes = tuple(state_axes.filters), tuple(state_axes.axes)
    graphdef, *groups = nnx.split(cell, *filters)
    fixed = [group for group, axis in zip(groups, axes) if axis is None]
    scanned = [_move(group, axis, 0) for group, axis in zip(groups, axes) if isinstance(axis, int)]
    split = [nnx.split_state(group, _CONSTANT, ...) for group, axis in zip(groups, axes) if axis is nnx.Carry]
    constants, carried = [c for c, _ in split], [r for _, r in split]
    steps = inputs.shape[time_axis]
    last = None
    if seq_lengths is not None:
        last = jnp.asarray(seq_lengths) - 1
        last = jnp.clip(jnp.where(last < 0, last + steps, last), 0, steps - 1)  # numpy indexing, then clamped

    def body(loop_carry, x):
        carried_in, c, frozen = loop_carry
        scanned_t, x_t, t = x
        # copy=True: Variables of this trace, which the step may write to (writes to broadcast state are then
        # dropped, as by nnx.scan); the outer trace's Variables would refuse the write.
        module = nnx.merge(graphdef, *fixed, *constants, *carried_in, *scanned_t, copy=True)
        c, y = module(c, x_t)
        _, *out = nnx.split(module, *filters)
        carried_out = []
        for group, constant in zip([g for g, axis in zip(out, axes) if axis is nnx.Carry], constants):
            constant_out, rest = nnx.split_state(group, _CONSTANT, ...)
            if any(
                a is not b for a, b in zip(jax.tree_util.tree_leaves(constant_out), jax.tree_util.tree_leaves(constant))
            ):
                raise ValueError(
                    "NNXRNN: the cell assigned to an nnx.Param or nnx.RngKey of its nnx.Carry "
                    "state, which memjax closes over as loop constants; give that state its own "
                    "entry in state_axes (an integer axis, or None), or use nnx.RNN."
                )
            carried_out.append(rest)
        if last is not None:
            frozen = jax.tree_util.tree_map(
                lambda new, old: jnp.where(_expand_dims_like(t <= last, new), new, old), c, frozen
            )
        scanned_out = [g for g, axis in zip(out, axes) if isinstance(axis, int)]
        return (carried_out, c, frozen), (y, scanned_out)

    xs = (scanned, jnp.moveaxis(inputs, time_axis, 0), jnp.arange(steps) if last is not None else None)
    frozen = carry if last is not None else None
    (carried, carry, frozen), (ys, scanned) = _memjax_scan(
        body, (carried, carry, frozen), xs, unroll=unroll, memory=memory, kind=kind, checkpoint_policy=checkpoint_policy
    )
    scanned = [_move(group, 0, axis) for group, axis in zip(scanned, [a for a in axes if isinstance(a, int)])]
    if carried or scanned:
        nnx.update(cell, *carried, *scanned)
    ys = jax.tree_util.tree_map(lambda y: jnp.moveaxis(y, 0, time_axis), ys)
    return (carry if last is None else frozen), ys


def _move(tree, source: int, destination: int):
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, source, destination), tree)
