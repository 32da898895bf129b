"""The pipelined executor: runs a schedule re-timed by :mod:`memjax._pipeline` as loops of uniform bodies."""

from __future__ import annotations

import jax
import numpy as np

from memjax._executor import Executor, loop, when
from memjax._pipeline import KEEP, LOAD_INTERNAL, Pipeline

__all__ = ["Pipelined"]


class Pipelined(Executor):
    """Runs a pipelined schedule (:mod:`memjax._pipeline`): loops of uniform bodies, no row per action.

    Forward sweep: plain steps that write their incoming carry where the pipeline says, a run of steps under
    ``jax.vjp`` storing internal states, the last step, and the checkpoints' internal states. Backward sweep:
    lead-in forwards, then chunks of (backward step, forward) iterations, each chunk after one conditional
    forward, then the remainder and the backward steps left.
    """

    def __init__(self, step, plan, reverse: bool, unroll, pipe: Pipeline):
        super().__init__(step, plan, reverse, unroll)
        self.pipe = pipe

    def forward(self, consts, init, xs):
        t, pipe, layout = self.plan.length, self.pipe, self.layout

        def plain(state, inputs):
            carry, pools, ys = state
            k, kind, offset = inputs
            if kind is not None:
                pools = layout.store_carry(pools, jax.tree_util.tree_leaves(carry), offset, kind == LOAD_INTERNAL)
            new, y = self._step(consts, carry, self._x(xs, k))
            return new, pools, self._write_y(ys, y, k)

        def vjp(state, inputs):
            carry, pools, ys = state
            k, offset = inputs
            new, y, pools = self._store_internal(consts, xs, pools, carry, k, offset)
            return new, pools, self._write_y(ys, y, k)

        def checkpoint(pools, inputs):  # I_c from the carry h_{c-1} written into its own slot
            c, offset = inputs
            carry = chain_carry(layout.load_carry(pools, offset, True))
            return self._store_internal(consts, xs, pools, carry, c, offset)[2]

        carry_tree = jax.tree_util.tree_structure(init)
        chain_carry = lambda leaves: jax.tree_util.tree_unflatten(carry_tree, leaves)  # noqa: E731
        pools = self._pools(pipe.stack_quanta + self.plan.schedule.hidden_quanta, consts, init, xs)
        pools = layout.hidden.store(pools, jax.tree_util.tree_leaves(init), pipe.stack_quanta)
        state = (init, pools, self._ys_buffer(consts, init, xs))
        written = np.arange(1, pipe.carry_step + 1, dtype=np.int32)
        state = loop(plain, state, (written, pipe.carry_kind, pipe.carry_offset))
        unwritten = np.arange(pipe.carry_step + 1, pipe.run_start, dtype=np.int32)
        state = loop(lambda s, k: plain(s, (k, None, None)), state, unwritten)
        state = loop(vjp, state, (np.arange(pipe.run_start, t, dtype=np.int32), pipe.run_offset))
        carry, pools, ys = state
        final, y, leaves = self._vjp(consts, carry, self._x(xs, t))
        pools = loop(checkpoint, pools, (pipe.checkpoint_step, pipe.checkpoint_offset))
        return (final, self._write_y(ys, y, t)), (consts, init, xs, pools, leaves)

    def _backward_sweep(self, consts, init, xs, pools, chain, state):
        pipe, layout, t = self.pipe, self.layout, self.plan.length

        def forward(pools, inputs):
            k, kind, source, offset = inputs
            carry = chain.carry_of(layout.load_carry(pools, source, (kind == LOAD_INTERNAL) | (kind == KEEP)))
            return self._store_internal(consts, xs, pools, carry, k, offset)[2]

        def iteration(operand, inputs):
            pools, cotangents = operand
            (k, offset), forward_inputs = inputs
            # Write, then read the written pools: XLA cannot order a read of the pools before an independent
            # in-place write to them, and would copy them whole on every iteration (see memjax._pipeline).
            pools = forward(pools, forward_inputs)
            return pools, chain.back_stored(pools, offset, k, cotangents)

        def chunk(operand, inputs):
            pools, cotangents = operand
            add, extra_inputs, body_inputs = inputs
            pools = when(add > 0, lambda pools: forward(pools, extra_inputs), pools)
            return loop(iteration, (pools, cotangents), body_inputs)

        columns = (pipe.forward_step, pipe.restore_kind, pipe.restore_offset, pipe.forward_offset)
        backward = (np.arange(t - 1, 0, -1, dtype=np.int32), pipe.backward_offset)
        pools = loop(forward, pools, tuple(c[: pipe.lead] for c in columns))
        operand = (pools, state)
        f, b = pipe.lead, 0  # next forward, next backward step
        for count, size in ((pipe.chunks, pipe.chunk), (int(pipe.remainder > 0), pipe.remainder)):
            if count == 0:
                continue
            extra = pipe.extra[:count] if size == pipe.chunk else pipe.extra[pipe.chunks :]
            extra_at = f + np.concatenate([[0], np.cumsum(extra[:-1] + size)]).astype(np.int64)
            body_at = extra_at[:, None] + extra[:, None] + np.arange(size)[None, :]
            back_at = b + size * np.arange(count)[:, None] + np.arange(size)[None, :]
            inputs = (
                extra,
                tuple(c[np.minimum(extra_at, len(c) - 1)] for c in columns),
                (tuple(c[back_at] for c in backward), tuple(c[body_at] for c in columns)),
            )
            operand = loop(chunk, operand, inputs)
            f, b = int(body_at[-1, -1]) + 1, int(back_at[-1, -1]) + 1
        pools, state = operand
        return loop(
            lambda cs, inputs: chain.back_stored(pools, inputs[1], inputs[0], cs), state, tuple(c[b:] for c in backward)
        )
