"""``NNXRNN`` against its oracle, ``flax.nnx.RNN`` with the same state.

Values (outputs and final carry), gradients with respect to the parameters and the inputs, and the state left in
the module must agree to float32 round-off, and the gradient must run memjax's primitive. Every gradient case
compiles both loops in one jitted function; the cross product of cells and options is marked slow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

from memjax._nnx_rnn import NNXRNN  # after the importorskip: the module imports Flax
from tests.helpers import assert_trees_allclose

RTOL, ATOL = 1e-5, 1e-6
B, T, D, H = 3, 5, 2, 4
LENGTHS = jnp.array([0, 2, T])  # an empty sequence (nnx.RNN then returns the last step's carry) and a full one
CELLS = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell, "optimized_lstm": nnx.OptimizedLSTMCell}
OPTIONS = {  # name: (constructor arguments, call arguments)
    "plain": ({}, {}),
    "seq_lengths": ({}, {"seq_lengths": LENGTHS}),
    "return_carry": ({"return_carry": True}, {}),
    "seq_lengths_return_carry": ({}, {"seq_lengths": LENGTHS, "return_carry": True}),
    "reverse": ({"reverse": True}, {"seq_lengths": LENGTHS, "return_carry": True}),
    "reverse_keep_order": ({"reverse": True, "keep_order": True}, {"seq_lengths": LENGTHS, "return_carry": True}),
    "time_major": ({"time_major": True}, {"seq_lengths": LENGTHS, "return_carry": True}),
}


def loss(rnn, xs, **call):
    out = rnn(xs, **call)
    carry, ys = out if (call.get("return_carry") or rnn.return_carry) else ((), out)
    value = jnp.sum(jnp.sin(ys.astype(jnp.float32)))
    value += sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in jax.tree_util.tree_leaves(carry))
    return value, out


def pair(cell_name, ctor=(), dtype=jnp.float32, memory="5%"):
    """``nnx.RNN`` and ``NNXRNN`` over one cell, the latter given the former's state."""
    cell = CELLS[cell_name](D, H, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    ref = nnx.RNN(cell, **dict(ctor))
    mem = NNXRNN(CELLS[cell_name](D, H, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(7)), **dict(ctor), memory=memory)
    nnx.update(mem, nnx.state(ref))
    return ref, mem


def inputs(time_major=False, dtype=jnp.float32):
    xs = jax.random.normal(jax.random.key(1), (T, B, D) if time_major else (B, T, D))
    return xs.astype(dtype)


def both_gradients(ref, mem, xs, call):
    @nnx.jit
    def run(ref, mem, xs):
        grad = nnx.value_and_grad(lambda rnn, xs: loss(rnn, xs, **call), argnums=(0, 1), has_aux=True)
        return grad(ref, xs), grad(mem, xs)

    return run(ref, mem, xs)


def uses_memjax(mem, xs, call) -> bool:
    """Whether ``mem``'s loss runs memjax's scan primitive, whose VJP rule (the schedule) ``jax.grad`` then uses."""
    graphdef, params, rest = nnx.split(mem, nnx.Param, ...)

    def value(params, rest, xs):
        return loss(nnx.merge(graphdef, params, rest, copy=True), xs, **call)[0]

    return "ScanPrimitive" in str(jax.make_jaxpr(value)(params, rest, xs))


def check_case(cell_name, option, dtype=jnp.float32, rtol=RTOL, atol=ATOL):
    ctor, call = OPTIONS[option]
    ref, mem = pair(cell_name, ctor.items(), dtype)
    xs = inputs(ctor.get("time_major", False), dtype)
    ((value_ref, out_ref), grad_ref), ((value_mem, out_mem), grad_mem) = both_gradients(ref, mem, xs, call)
    assert_trees_allclose(out_mem, out_ref, rtol, atol)
    np.testing.assert_allclose(value_mem, value_ref, rtol=rtol)
    assert_trees_allclose(grad_mem, grad_ref, rtol, atol)  # parameters and inputs
    assert_trees_allclose(nnx.state(mem), nnx.state(ref), rtol=0, atol=0)  # e.g. the carry stream's counter
    return mem, xs, call


# A few cells times options in the default run; each option and each cell appears at least once.
@pytest.mark.parametrize(
    "cell_name, option",
    [
        ("lstm", "plain"),
        ("gru", "seq_lengths_return_carry"),
        ("optimized_lstm", "reverse"),
        ("lstm", "reverse_keep_order"),
        ("gru", "time_major"),
    ],
)
def test_matches_nnx_rnn(cell_name, option):
    mem, xs, call = check_case(cell_name, option)
    if option == "plain":
        assert uses_memjax(mem, xs, call)


@pytest.mark.slow
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("cell_name", list(CELLS))
def test_matches_nnx_rnn_every_cell_and_option(cell_name, option):
    check_case(cell_name, option)


def test_bfloat16_matches_nnx_rnn():
    check_case("lstm", "seq_lengths_return_carry", dtype=jnp.bfloat16, rtol=1e-2, atol=1e-2)


def test_is_an_nnx_rnn_with_its_state():
    ref, mem = pair("lstm", {"return_carry": True, "unroll": 2}.items())
    assert isinstance(mem, nnx.RNN)
    assert jax.tree_util.tree_structure(nnx.state(mem)) == jax.tree_util.tree_structure(nnx.state(ref))
    assert (mem.memory, mem.kind, mem.checkpoint_policy, mem.unroll) == ("5%", "msm", None, 2)
    xs = inputs()
    initial = (jnp.ones((B, H)), jnp.zeros((B, H)))
    # Call arguments override the constructor's, as in nnx.RNN.
    assert_trees_allclose(
        mem(xs, initial_carry=initial, return_carry=False), ref(xs, initial_carry=initial, return_carry=False)
    )


class DropoutCell(nnx.Module):
    """A cell with random state, state updated each step, and a parameter per step (scanned over)."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(D + H, H, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.shift = nnx.Param(jax.random.normal(rngs.params(), (T, H)))
        self.steps = nnx.BatchStat(jnp.zeros(()))

    def __call__(self, carry, x):
        shift = self.shift[...] if self.shift.ndim == 1 else self.shift[...][0]  # scanned over, or one throughout
        h = self.dropout(jnp.tanh(self.linear(jnp.concatenate([carry, x], axis=-1)) + shift))
        self.steps[...] += 1
        return h, h

    def initialize_carry(self, input_shape, rngs):
        return jnp.zeros(input_shape[:-1] + (H,))

    @property
    def num_feature_axes(self) -> int:
        return 1


@pytest.mark.parametrize(
    "ctor",
    [
        {},
        {"broadcast_rngs": "dropout"},  # one dropout mask for every step
        {"broadcast_rngs": "dropout", "state_axes": nnx.StateAxes({nnx.PathContains("shift"): 0, ...: nnx.Carry})},
    ],
    ids=["carried_rngs", "broadcast_rngs", "state_axes"],
)
def test_random_and_scanned_state_match_nnx_rnn(ctor):
    ref = nnx.RNN(DropoutCell(nnx.Rngs(0, dropout=1)), **ctor)
    mem = NNXRNN(DropoutCell(nnx.Rngs(0, dropout=1)), **ctor, memory="5%")
    xs = inputs()
    for _ in range(2):  # the second call draws new masks in both
        assert_trees_allclose(mem(xs), ref(xs))
        assert_trees_allclose(nnx.state(mem), nnx.state(ref), rtol=0, atol=0)  # rng counters and the step count


@pytest.mark.slow
def test_random_state_gradients_match_nnx_rnn():
    ctor = {"broadcast_rngs": "dropout", "state_axes": nnx.StateAxes({nnx.PathContains("shift"): 0, ...: nnx.Carry})}
    ref = nnx.RNN(DropoutCell(nnx.Rngs(0, dropout=1)), **ctor)
    mem = NNXRNN(DropoutCell(nnx.Rngs(0, dropout=1)), **ctor, memory="5%")
    ((_, out_ref), grad_ref), ((_, out_mem), grad_mem) = both_gradients(ref, mem, inputs(), {})
    assert_trees_allclose(out_mem, out_ref)
    assert_trees_allclose(grad_mem, grad_ref)


def test_a_cell_that_writes_its_parameters_raises():
    class Writer(DropoutCell):
        def __call__(self, carry, x):
            self.linear.bias[...] += 1.0
            return super().__call__(carry, x)

    with pytest.raises(ValueError, match="nnx.Param or nnx.RngKey of its nnx.Carry state"):
        NNXRNN(Writer(nnx.Rngs(0, dropout=1)))(inputs())
