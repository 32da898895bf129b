"""The fast-weights RNN (memjax.models.fast_weights): its equations, its data, and memjax's gradient through A.

The step is checked against the paper's equations written out independently here, and against the three
pitfalls of public implementations (one A for the whole batch, A one step late, layer norm over the batch).
memjax's gradient must equal full BPTT's (jax.lax.scan), including the part that flows through the fast
weights A, which is shown to matter by cutting it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from memjax.models import fast_weights as fw

B, H, PAIRS = 3, 8, 3
V = 26 + 11


@pytest.fixture(scope="module")
def task():
    xs, labels = fw.associative_retrieval(jax.random.key(0), B, num_pairs=PAIRS)
    params = fw.init_params(jax.random.key(1), V, H, 10)
    # Away from the initialisation's symmetric values, so that every term of the step matters.
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    return xs, labels, params


def test_associative_retrieval_data():
    tokens, targets = fw.associative_retrieval(jax.random.key(3), 64, num_pairs=4, one_hot=False)
    assert tokens.shape == (64, 11) and tokens.dtype == jnp.int32 and targets.shape == (64,)
    tokens, targets = np.asarray(tokens), np.asarray(targets)
    for row, target in zip(tokens, targets):
        keys, digits = row[0:8:2], row[1:8:2] - 26
        assert len(set(keys)) == 4 and keys.max() < 26 and set(digits) <= set(range(10))
        assert list(row[8:10]) == [36, 36] and row[10] in keys
        assert digits[list(keys).index(row[10])] == target
    text = fw.decode(tokens[0])
    assert len(text) == 11 and text[8:10] == "??" and text[-1] in text[0:8:2]
    one_hot, same_targets = fw.associative_retrieval(jax.random.key(3), 64, num_pairs=4)
    assert one_hot.shape == (11, 64, V)
    np.testing.assert_array_equal(one_hot.argmax(-1).T, tokens)
    np.testing.assert_array_equal(same_targets, targets)
    with pytest.raises(ValueError, match="num_pairs"):
        fw.associative_retrieval(jax.random.key(0), 2, num_pairs=27)


def _reference_step(params, h, fast, x, decay, eta):
    """The paper's equations, one sequence at a time, in numpy (float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    z = p["w_hidden"].T @ h + p["w_input"].T @ x + p["bias"]
    hs = np.maximum(z, 0)
    u = z + fast @ hs
    u = (u - u.mean()) / np.sqrt(u.var() + 1e-5) * p["ln_gain"] + p["ln_bias"]  # over the units
    h_new = np.maximum(u, 0)
    return h_new, decay * fast + eta * np.outer(h_new, h_new)


def test_step_follows_the_paper(task):
    xs, _, params = task
    decay, eta = 0.9, 0.4
    state = fw.initial_state(B, H)
    np_h = np.zeros((B, H))
    np_fast = np.zeros((B, H, H))
    for x in xs:
        state, h = fw.step(params, state, x, decay=decay, fast_learning_rate=eta)
        for b in range(B):  # one A per sequence, updated with h(t+1) before the next step uses it
            np_h[b], np_fast[b] = _reference_step(params, np_h[b], np_fast[b], np.asarray(x[b], np.float64), decay, eta)
        np.testing.assert_allclose(state.hidden, np_h, rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(state.fast, np_fast, rtol=2e-4, atol=1e-5)
        np.testing.assert_array_equal(h, state.hidden)
    assert not np.allclose(np_fast[0], np_fast[1])  # sequences do not share A


def test_fast_weights_are_per_sequence_and_layer_norm_is_per_sequence(task):
    xs, _, params = task
    final, _ = fw.unroll(params, xs, scan=jax.lax.scan)
    # Changing the inputs of sequence 0 leaves every other sequence untouched (no batch-wide A, no batch LN).
    other, _ = fw.unroll(params, xs.at[:, 0].set(jnp.roll(xs[:, 0], 1, axis=0)), scan=jax.lax.scan)
    assert not np.allclose(other.fast[0], final.fast[0])
    np.testing.assert_array_equal(other.fast[1:], final.fast[1:])
    np.testing.assert_array_equal(other.hidden[1:], final.hidden[1:])
    normed = fw.layer_norm(jnp.arange(12.0).reshape(3, 4) ** 2, jnp.ones(4), jnp.zeros(4))
    np.testing.assert_allclose(normed.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(normed.var(-1), 1, atol=1e-3)


def test_memjax_gradient_equals_full_bptt_through_the_fast_weights(task):
    xs, labels, params = task

    def loss(params, scan, cut_fast=False, **kwargs):
        def body(state, x):
            if cut_fast:  # no gradient through A(t): what ignoring the fast weights' path would give
                state = state._replace(fast=jax.lax.stop_gradient(state.fast))
            return fw.step(params, state, x)

        state = fw.initial_state(B, H)
        if scan is memjax.scan:
            final, hs = memjax.scan(body, state, xs, **kwargs)
        else:
            final, hs = scan(body, state, xs)
        log_probs = jax.nn.log_softmax(fw.logits(params, final))
        xent = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))
        # A loss that reads A directly, and the hidden states through the sequence.
        return xent + 0.1 * jnp.sum(final.fast**2) + 0.01 * jnp.sum(hs**2)

    @jax.jit
    def grads(params):
        return (
            jax.grad(loss)(params, jax.lax.scan),
            jax.grad(loss)(params, memjax.scan, memory=0.3),
            jax.grad(loss)(params, memjax.scan, memory=0.5, kind="hsm"),
            jax.grad(loss)(params, jax.lax.scan, cut_fast=True),
        )

    full, msm, hsm, cut = grads(params)
    for got in (msm, hsm):
        for name in full:  # float32 round-off, relative to each gradient's scale (the same as jax.checkpoint's)
            scale = float(np.abs(np.asarray(full[name])).max())
            np.testing.assert_allclose(got[name], full[name], rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    # The path through A carries gradient: cutting it changes the recurrent weights' gradient substantially.
    diff = np.abs(np.asarray(cut["w_hidden"]) - np.asarray(full["w_hidden"])).max()
    assert diff > 1e-2 * np.abs(np.asarray(full["w_hidden"])).max()


def test_unroll_uses_memjax_by_default_and_explains_the_trade(task):
    xs, _, params = task
    assert "ScanPrimitive" in str(jax.make_jaxpr(lambda p: fw.unroll(p, xs, memory=0.3))(params))
    report = memjax.explain(lambda c, x: fw.step(params, c, x), fw.initial_state(B, H), xs, memory=0.3, verbose=False)
    assert report.carry_bytes == 4 * B * (H + H * H)  # h and A, float32
    assert report.stored_bytes <= report.budget_bytes < report.store_all_bytes


@pytest.mark.slow
def test_fast_weights_learn_associative_retrieval():
    """A short run: well above chance (10%) on the paper's task with 4 pairs, trained through memjax.scan."""
    import optax

    from memjax import training

    hidden, steps = 64, 1500
    params = fw.init_params(jax.random.key(0), V, hidden, 10)
    optimizer = optax.adam(2e-3)

    def loss_fn(params, batch, rng):
        xs, labels = batch
        return fw.loss(params, xs, labels, memory=0.3)

    def batches(step):
        return fw.associative_retrieval(jax.random.fold_in(jax.random.key(1), step), 64, num_pairs=4)

    state, _ = training.train(
        loss_fn, optimizer, training.init_train_state(params, optimizer, jax.random.key(2)), batches, steps
    )
    xs, labels = fw.associative_retrieval(jax.random.key(99), 512, num_pairs=4)
    assert float(fw.accuracy(state.params, xs, labels, scan=jax.lax.scan)) > 0.5
