"""The pipelined executor: runs a schedule re-timed by :mod:`memjax._pipeline` as loops of uniform bodies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax._executor import Executor, loop
from memjax._pipeline import KEEP, LOAD_INTERNAL, Pipeline

__all__ = ["Pipelined"]


class Pipelined(Executor):
    """Runs a pipelined schedule (:mod:`memjax._pipeline`): loops of uniform bodies, no row per action, no
    conditional.

    Forward sweep: plain steps that write their incoming carry where the pipeline says, a run of steps under
    ``jax.vjp`` storing internal states, the last step, and the checkpoints' internal states. Backward sweep: one
    loop of iterations, each a forward of the stream and a backward step, then the backward steps left. The
    lead-in's and the chunks' extra forwards are iterations of the same loop whose backward step is discarded
    (see :meth:`_backward_sweep`): a few wasted backward steps in place of a conditional per chunk, which keeps
    the sweep one loop with one copy of the step's forward and of its backward.
    """

    def __init__(self, step, plan, reverse: bool, unroll, pipe: Pipeline):
        super().__init__(step, plan, reverse, unroll)
        self.pipe = pipe

    def forward(self, consts, init, xs):
        t, pipe, layout = self.plan.length, self.pipe, self.layout

        def plain(state, inputs):
            carry, pools, ys = state
            k, starts = inputs
            if starts is not None:
                pools = layout.hidden.store(pools, jax.tree_util.tree_leaves(carry), None, starts)
            new, y = self._step(consts, carry, self._x(xs, k))
            return new, pools, self._write_y(ys, y, k)

        def vjp(state, inputs):
            carry, pools, ys = state
            k, offset = inputs
            new, y, pools = self._store_internal(consts, xs, pools, carry, k, offset)
            return new, pools, self._write_y(ys, y, k)

        def checkpoint(pools, inputs):  # I_c from the carry h_{c-1} written into its own slot
            c, offset, starts = inputs
            carry = chain_carry(layout.hidden.load(pools, None, starts))
            return self._store_internal(consts, xs, pools, carry, c, offset)[2]

        carry_tree = jax.tree_util.tree_structure(init)
        chain_carry = lambda leaves: jax.tree_util.tree_unflatten(carry_tree, leaves)  # noqa: E731
        pools = self._pools(pipe.stack_quanta + self.plan.schedule.hidden_quanta, consts, init, xs)
        pools = layout.hidden.store(pools, jax.tree_util.tree_leaves(init), pipe.stack_quanta)
        state = (init, pools, self._ys_buffer(consts, init, xs))
        written = np.arange(1, pipe.carry_step + 1, dtype=np.int32)
        starts = _tables(layout.carry_starts(pipe.carry_offset, pipe.carry_kind == LOAD_INTERNAL))
        state = loop(plain, state, (written, starts))
        unwritten = np.arange(pipe.carry_step + 1, pipe.run_start, dtype=np.int32)
        state = loop(lambda s, k: plain(s, (k, None)), state, unwritten)
        state = loop(vjp, state, (np.arange(pipe.run_start, t, dtype=np.int32), pipe.run_offset))
        carry, pools, ys = state
        final, y, leaves = self._vjp(consts, carry, self._x(xs, t))
        starts = _tables(layout.carry_starts(pipe.checkpoint_offset, True))
        pools = loop(checkpoint, pools, (pipe.checkpoint_step, pipe.checkpoint_offset, starts))
        return (final, self._write_y(ys, y, t)), (consts, init, xs, pools, leaves)

    def _backward_sweep(self, consts, init, xs, pools, chain, state):
        """One iteration per forward of the stream: the forward, then the next backward step where the forward is
        paired with one. An unpaired forward (the lead-in, a chunk's extra) back-propagates its own step from the
        internal state it has just stored, a genuine evaluation whose carry and parameter cotangents are
        discarded by a select, and whose ``xs`` cotangent is overwritten when that step's own backward comes
        (every forward of the stream recomputes a step not yet back-propagated). Then the backward steps left."""
        pipe, layout, t = self.pipe, self.layout, self.plan.length
        paired = pipe.paired
        backward_step = np.arange(t - 1, 0, -1)
        j = np.minimum(np.cumsum(paired) - paired, len(backward_step) - 1)  # each pair's backward step index
        own_step = np.where(paired, backward_step[j], pipe.forward_step)
        own_offset = np.where(paired, pipe.backward_offset[j], pipe.forward_offset)
        in_internal = (pipe.restore_kind == LOAD_INTERNAL) | (pipe.restore_kind == KEEP)
        rows = (
            pipe.forward_step,
            _tables(layout.carry_starts(pipe.restore_offset, in_internal)),
            _tables(layout.starts(pipe.forward_offset)),
            own_step.astype(np.int32),
            _tables(layout.starts(own_offset)),
            paired,
        )

        def iteration(operand, row):
            pools, (g, acc, buffers) = operand
            k, source, target, back_k, back_starts, keep = row
            carry = chain.carry_of(layout.hidden.load(pools, None, source))
            # Write, then read the written pools: XLA cannot order a read of the pools before an independent
            # in-place write to them, and would copy them whole on every iteration (see memjax._pipeline).
            pools = self._store_internal(consts, xs, pools, carry, k, None, target)[2]
            new_g, new_acc, buffers = chain.back_stored(pools, None, back_k, (g, acc, buffers), back_starts)
            g, acc = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), (new_g, new_acc), (g, acc))
            return pools, (g, acc, buffers)

        pools, state = loop(iteration, (pools, state), rows)
        done = int(paired.sum())
        offsets = _tables(layout.starts(pipe.backward_offset[done:]))
        return loop(
            lambda cs, inputs: chain.back_stored(pools, None, inputs[0], cs, inputs[1]),
            state,
            (backward_step[done:].astype(np.int32), offsets),
        )


def _tables(columns: list[np.ndarray]) -> tuple:
    """Per-dtype element offsets as a loop's ``int32`` tables."""
    return tuple(np.asarray(c, np.int32) for c in columns)
