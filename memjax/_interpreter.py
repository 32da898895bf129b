"""The row interpreter: runs any schedule one action and step per row (tables from :mod:`memjax._tables`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax._executor import Executor, loop, when
from memjax._schedule import Op

__all__ = ["Interpreter"]


class Interpreter(Executor):
    """Runs any schedule one action and step per row.

    Forward sweep: one loop over the steps, with a ``lax.cond`` each for storing a hidden and an internal
    state. Backward sweep: one loop over the rows, each row one ``lax.cond`` per kind of action (seven; the
    counts are :mod:`memjax._tables`'s, and a test checks them against the program), each either
    updating its part of the state or passing it through. XLA then updates the pools and the cotangent buffers
    in place; a single ``lax.switch`` over all actions made it copy the whole pool on every row, and branches
    that return zeros for what they do not compute would materialise parameter-sized arrays on every row.
    """

    def __init__(self, step, plan, reverse: bool, unroll):
        super().__init__(step, plan, reverse, unroll)
        self.tables = plan.tables

    def forward(self, consts, init, xs):
        t, tables, layout = self.plan.length, self.tables, self.layout

        def body(state, inputs):
            carry, pools, ys = state
            k, save_hidden, save_internal = inputs
            x = self._x(xs, k)
            pools = when(
                save_hidden >= 0,
                lambda pools: layout.hidden.store(pools, jax.tree_util.tree_leaves(carry), save_hidden),
                pools,
            )

            def plain(pools):
                new, y = self._step(consts, carry, x)
                return new, y, pools

            new, y, pools = jax.lax.cond(
                save_internal >= 0,
                lambda pools: self._store_internal(consts, xs, pools, carry, k, save_internal),
                plain,
                pools,
            )
            return new, pools, self._write_y(ys, y, k)

        # Steps 1..t-1 in a scan, then step t under jax.vjp: its residuals start the backward sweep.
        steps = jax.lax.iota(jnp.int32, t - 1) + 1  # an iota, not a length-t constant in the program
        state = (
            init,
            self._pools(self.plan.schedule.stack_quanta, consts, init, xs),
            self._ys_buffer(consts, init, xs),
        )
        carry, pools, ys = loop(
            body, state, (steps, tables.save_hidden[: t - 1], tables.save_internal[: t - 1]), unroll=self.unroll
        )
        if tables.save_hidden[t - 1] >= 0:
            pools = layout.hidden.store(pools, jax.tree_util.tree_leaves(carry), int(tables.save_hidden[t - 1]))
        final, y, leaves = self._vjp(consts, carry, self._x(xs, t))
        return (final, self._write_y(ys, y, t)), (consts, init, xs, pools, leaves)

    def _backward_sweep(self, consts, init, xs, pools, chain, state):
        layout = self.layout

        def row(state, action):
            register, pools, cotangents = state
            op, a, offset = action
            safe = jnp.maximum(offset, 0)
            register = when(
                op == Op.RESTORE_HIDDEN,
                lambda r: chain.carry_of(
                    [
                        jnp.where(offset < 0, first, saved)
                        for first, saved in zip(jax.tree_util.tree_leaves(init), layout.hidden.load(pools, safe))
                    ]
                ),
                register,
            )
            register = when(
                op == Op.RESTORE_INTERNAL,
                lambda r: chain.carry_of(layout.internal.load(pools, offset)[chain.n_residuals :]),
                register,
            )
            register = when(op == Op.ADVANCE, lambda r: self._step(consts, r, self._x(xs, a + 1))[0], register)
            pools = when(
                op == Op.SAVE_HIDDEN,
                lambda p: layout.hidden.store(p, jax.tree_util.tree_leaves(register), offset),
                pools,
            )
            register, pools = when(
                op == Op.SAVE_INTERNAL,
                lambda operand: self._store_internal(consts, xs, operand[1], operand[0], a + 1, offset)[::2],
                (register, pools),
            )
            cotangents = when(
                op == Op.BACKWARD,
                lambda cs: chain.back(self._vjp(consts, register, self._x(xs, a + 1))[2], a + 1, cs),
                cotangents,
            )
            cotangents = when(op == Op.BACKWARD_STORED, lambda cs: chain.back_stored(pools, offset, a, cs), cotangents)
            return register, pools, cotangents

        tables = self.tables
        return loop(row, (init, pools, state), (tables.op, tables.start, tables.offset))[2]
