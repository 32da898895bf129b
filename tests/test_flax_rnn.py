"""``memjax.flax.RNN`` against its oracle, ``flax.linen.RNN`` with the same cell and the same parameters.

Values and gradients (with respect to the parameters and the inputs) must agree to float32 round-off, the
parameter trees of the two ``init`` must be identical, and the memjax path must really run (its primitive is in
the loss's jaxpr; under ``jax.grad`` it is replaced by the schedule it runs). Each test compiles one jitted
function that differentiates both models: compilation is what these tests cost on a shared CPU.
"""

from __future__ import annotations

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nn = pytest.importorskip("flax.linen")

from memjax._flax_rnn import RNN  # after the importorskip: the module imports Flax
from tests.helpers import ROOT, assert_trees_allclose, uses_memjax

T, B, D, H = 6, 4, 3, 5
RTOL, ATOL = 1e-5, 1e-6
LENGTHS = (T, 1, 4, 3)  # a full sequence, a single step and two padded ones


def check_matches_nn_rnn(cell, xs, fields=None, call=None, memory="5%", rngs=None, rtol=RTOL, atol=ATOL):
    """Compare ``RNN(cell, **fields, memory=memory)`` with ``nn.RNN(cell, **fields)``: init, values, gradients."""
    fields, call = fields or {}, call or {}
    ref, mem = nn.RNN(cell, **fields), RNN(cell, **fields, memory=memory)
    assert isinstance(mem, nn.RNN)
    init_rngs = {"params": jax.random.key(0), **(rngs or {})}
    params, params_mem = jax.jit(lambda r, x: (ref.init(r, x, **call), mem.init(r, x, **call)))(init_rngs, xs)
    assert_trees_allclose(params_mem, params, rtol=0, atol=0)  # the same tree with the same values

    def loss(params, xs, model):
        out = model.apply(params, xs, rngs=rngs, **call)
        return sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in jax.tree_util.tree_leaves(out)), out

    assert uses_memjax(lambda p, x: loss(p, x, mem), params, xs)
    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    ((_, out_ref), grads_ref), ((_, out_mem), grads_mem) = jax.jit(lambda p, x: (grad(p, x, ref), grad(p, x, mem)))(
        params, xs
    )
    assert_trees_allclose(out_mem, out_ref, rtol, atol)
    assert_trees_allclose(grads_mem, grads_ref, rtol, atol)
    return out_mem


def inputs(shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(1), shape).astype(dtype)


CELLS = {"lstm": lambda: nn.LSTMCell(H), "gru": lambda: nn.GRUCell(H), "optimized": lambda: nn.OptimizedLSTMCell(H)}


@pytest.mark.parametrize(
    "cell, lengths, return_carry, direction, time_major, memory",
    [
        ("lstm", False, False, "forward", False, "5%"),
        ("lstm", True, True, "forward", False, "5%"),
        ("gru", True, True, "reverse", False, 0.3),
        ("gru", False, True, "reverse", True, 2048),
        ("optimized", True, True, "reverse_keep_order", True, "5%"),
        ("optimized", True, False, "reverse_keep_order", False, None),
    ],
)
def test_matches_nn_rnn(cell, lengths, return_carry, direction, time_major, memory):
    xs = inputs((T, B, D) if time_major else (B, T, D))
    call = {
        "return_carry": return_carry,
        "time_major": time_major,
        "reverse": direction != "forward",
        "keep_order": direction == "reverse_keep_order",
    }
    if lengths:
        call["seq_lengths"] = jnp.array(LENGTHS)
    check_matches_nn_rnn(CELLS[cell](), xs, call=call, memory=memory)


def test_fields_and_edge_lengths_match_nn_rnn():
    """Options set as fields rather than call arguments; lengths of 0 and T (nn.RNN's carry for 0 is the last)."""
    fields = {"return_carry": True, "reverse": True, "keep_order": True, "unroll": 2}
    carry, _ = check_matches_nn_rnn(
        nn.LSTMCell(H), inputs((B, T, D)), fields=fields, call={"seq_lengths": jnp.array([0, T, 2, 5])}, memory=0.5
    )
    assert jax.tree_util.tree_map(jnp.shape, carry) == ((B, H), (B, H))


def test_bfloat16_matches_nn_rnn_in_bfloat16():
    # lecun_normal: the default orthogonal initializer needs a QR, which the CPU has not in bfloat16.
    cell = nn.LSTMCell(
        H, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, recurrent_kernel_init=nn.initializers.lecun_normal()
    )
    check_matches_nn_rnn(
        cell,
        inputs((B, T, D), jnp.bfloat16),
        rtol=2e-2,
        atol=2e-2,
        call={"return_carry": True, "seq_lengths": jnp.array(LENGTHS)},
    )


def test_dropout_rngs_and_initial_carry_match_nn_rnn():
    """A custom cell with dropout: split_rngs gives every step nn.RNN's mask; the initial carry is given."""

    class DropoutCell(nn.RNNCellBase):
        @nn.compact
        def __call__(self, carry, x):
            h = jnp.tanh(nn.Dense(H)(carry) + nn.Dense(H, use_bias=False)(x))
            h = nn.Dropout(0.3, deterministic=False)(h)
            return h, h

        @nn.nowrap
        def initialize_carry(self, rng, input_shape):
            return jnp.zeros(input_shape[:-1] + (H,))

        @property
        def num_feature_axes(self):
            return 1

    fields = {"split_rngs": {"params": False, "dropout": True}}
    call = {"return_carry": True, "seq_lengths": jnp.array(LENGTHS), "initial_carry": jnp.ones((B, H))}
    check_matches_nn_rnn(
        DropoutCell(), inputs((B, T, D)), fields=fields, call=call, rngs={"dropout": jax.random.key(7)}
    )


@pytest.mark.slow
def test_conv_lstm_matches_nn_rnn():
    """ConvLSTMCell: three feature axes, so the time axis is found from num_feature_axes."""
    xs = inputs((2, T, 4, 4, 2))
    out = check_matches_nn_rnn(
        nn.ConvLSTMCell(3, kernel_size=(3, 3)),
        xs,
        memory=0.3,
        call={"return_carry": True, "seq_lengths": jnp.array([T, 3]), "reverse": True},
    )
    assert out[1].shape == (2, T, 4, 4, 3)


def load_seq2seq_example():
    path = ROOT / "examples" / "seq2seq.py"
    spec = importlib.util.spec_from_file_location("seq2seq_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_seq2seq_example_trains_as_with_nn_rnn():
    """The seq2seq example (encoder with seq_lengths, sampling decoder): 30 Adam steps, nn.RNN's losses."""
    example = load_seq2seq_example()
    data = example.batches(1, 8, 2)[0]
    model = example.Seq2seq(8)
    variables = model.init({"params": jax.random.key(0), "lstm": jax.random.key(1)}, data["query"], data["answer"])
    jaxpr = str(
        jax.make_jaxpr(lambda v: model.apply(v, data["query"], data["answer"], rngs={"lstm": jax.random.key(2)}))(
            variables
        )
    )
    assert jaxpr.count("ScanPrimitive") == 2  # the encoder and the decoder both run memjax
    ours, theirs = example.train_both(steps=30, batch_size=8, hidden_size=8, digits=2)
    assert len(ours) == 30
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
