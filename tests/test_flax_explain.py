"""memjax.flax.explain: the report for a Flax cell or RNN wrapper is memjax.explain's for the step the adapters run.

The oracle is memjax.explain on the step written by hand (``cell.apply`` for Linen, the NNX cell called on its
own state): same sizes, same plan. Nothing is compiled, so the file is fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import memjax

nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
import memjax.flax  # noqa: E402

T, B, D, H = 50, 3, 5, 7


def _linen_cell():
    cell = nn.LSTMCell(features=H)
    x0 = jnp.zeros((B, D))
    carry = cell.initialize_carry(jax.random.key(0), x0.shape)
    return cell, carry, cell.init(jax.random.key(1), carry, x0)


def _same_trade(got, want):
    for field in (
        "carry_bytes",
        "internal_bytes",
        "invariant_bytes",
        "budget_bytes",
        "stored_bytes",
        "forwards_per_step",
        "executor",
        "conditionals",
    ):
        assert getattr(got, field) == getattr(want, field), field
    assert got.plan.length == want.plan.length


def test_linen_cell_matches_explain_of_its_apply():
    cell, carry, variables = _linen_cell()
    xs = jax.ShapeDtypeStruct((T, B, D), jnp.float32)
    got = memjax.flax.explain(cell, carry, xs, variables, memory="10%", verbose=False)
    want = memjax.explain(lambda c, x: cell.apply(variables, c, x), carry, xs, memory="10%", verbose=False)
    _same_trade(got, want)
    assert got.carry_bytes == 2 * B * H * 4
    assert got.title == "LSTMCell (flax.linen)"
    assert str(got).startswith("memjax.explain: LSTMCell (flax.linen)\n")


def test_nnx_cell_names_the_module_and_measures_its_carry():
    cell = nnx.GRUCell(D, H, rngs=nnx.Rngs(0))
    carry = cell.initialize_carry((B, D), nnx.Rngs(1))
    xs = jnp.zeros((T, B, D))
    got = memjax.flax.explain(cell, carry, xs, memory="10%", verbose=False)
    graphdef, state = nnx.split(cell)
    want = memjax.explain(lambda c, x: nnx.merge(graphdef, state)(c, x), carry, xs, memory="10%", verbose=False)
    _same_trade(got, want)
    assert got.carry_bytes == B * H * 4
    assert got.title == "GRUCell (flax.nnx)"


@pytest.mark.parametrize("wrapper", ["linen", "memjax", "nnx"])
def test_rnn_wrappers_explain_their_cell_over_time_major_inputs(wrapper):
    inputs = jnp.zeros((B, T, D))  # batch-major, as the wrappers take them by default
    if wrapper == "nnx":
        rnn, variables = nnx.RNN(nnx.LSTMCell(D, H, rngs=nnx.Rngs(0))), None
    else:
        rnn = nn.RNN(nn.LSTMCell(H)) if wrapper == "linen" else memjax.flax.RNN(nn.LSTMCell(H), memory="10%")
        variables = rnn.init(jax.random.key(0), inputs)
    got = memjax.flax.explain(rnn, None, inputs, variables, memory="10%", verbose=False)
    cell, carry, cell_variables = _linen_cell()
    want = memjax.explain(
        lambda c, x: cell.apply(cell_variables, c, x),
        carry,
        jax.ShapeDtypeStruct((T, B, D), jnp.float32),
        memory="10%",
        verbose=False,
    )
    assert (got.carry_bytes, got.internal_bytes, got.plan.length) == (want.carry_bytes, want.internal_bytes, T)
    assert got.title.startswith("RNN of LSTMCell")


def test_memjax_rnn_defaults_to_its_own_budget_and_kind():
    rnn = memjax.flax.RNN(nn.LSTMCell(H), memory="20%", kind="hsm")
    inputs = jnp.zeros((B, T, D))
    variables = rnn.init(jax.random.key(0), inputs)
    own = memjax.flax.explain(rnn, None, inputs, variables, verbose=False)
    asked = memjax.flax.explain(rnn, None, inputs, variables, memory="20%", kind="hsm", verbose=False)
    assert own.plan.kind == "hsm"
    assert own.budget_bytes == asked.budget_bytes
    assert memjax.flax.explain(rnn, None, inputs, variables, kind="msm", verbose=False).plan.kind == "msm"


def test_wrong_modules_and_variables_are_named():
    cell, carry, variables = _linen_cell()
    xs = jnp.zeros((T, B, D))
    with pytest.raises(TypeError, match="variables is required for the Linen module LSTMCell"):
        memjax.flax.explain(cell, carry, xs)
    nnx_cell = nnx.LSTMCell(D, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="variables must be None for the NNX module LSTMCell"):
        memjax.flax.explain(nnx_cell, carry, xs, variables)
    with pytest.raises(TypeError, match="must be a flax.linen or flax.nnx Module, got function"):
        memjax.flax.explain(lambda c, x: (c, x), carry, xs)
