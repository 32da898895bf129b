"""Framework adapters (Flax Linen and NNX, Haiku), the Equinox idiom and Equinox's checkpointed scan, and the
optax training loop.

The oracle of every adapter is the framework's own loop on the same model and parameters: ``nn.scan``,
``nnx.scan`` (or a Python loop), ``hk.scan`` / ``hk.dynamic_unroll``, ``jax.lax.scan``. Values and gradients
must agree to float32 round-off (rtol 1e-5), random streams included (dropout draws the same masks), and the
memjax path must really run (its custom VJP appears in the jaxpr). Equinox's ``checkpointed`` scan, an
independent implementation of checkpointed backpropagation, is a second oracle for memjax.scan's gradient with
as many stored carries. Sizes are tiny: every memjax gradient costs a compilation of a few seconds on a shared
CPU, so each test compiles one jitted function.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from memjax import training
from memjax._measure import tree_bytes
from tests.helpers import assert_trees_allclose, assert_trees_close, lstm_step, tiny_lstm, uses_memjax, value_and_grads

try:
    import flax.linen as nn
    from flax import nnx

    import memjax.flax
except ImportError:  # pragma: no cover
    nn = nnx = None
try:
    import haiku as hk

    import memjax.haiku
except ImportError:  # pragma: no cover
    hk = None
try:
    import equinox as eqx
except ImportError:  # pragma: no cover
    eqx = None
import optax

needs_flax = pytest.mark.skipif(nn is None, reason="needs flax (pip install memjax[flax])")
needs_haiku = pytest.mark.skipif(hk is None, reason="needs dm-haiku (pip install memjax[haiku])")
needs_equinox = pytest.mark.skipif(eqx is None, reason="needs equinox (pip install memjax[equinox])")

RTOL, ATOL = 1e-5, 1e-6
T, B, D, H = 6, 8, 3, 5  # batch 8 keeps batch statistics well conditioned


@pytest.fixture(scope="module")
def xs_btd():
    return jax.random.normal(jax.random.key(1), (B, T, D))


# ------------------------------------------------------------------------------------------------------------------
# Flax Linen
# ------------------------------------------------------------------------------------------------------------------


@needs_flax
def test_linen_lstm_matches_nn_scan(xs_btd):
    def lstm(scan, **kwargs):
        return scan(
            nn.LSTMCell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1, **kwargs
        )(features=H)

    ref, mem = lstm(nn.scan), lstm(memjax.flax.scan, memory=0.3)
    assert type(ref).__name__ == type(mem).__name__ == "ScanLSTMCell"
    carry = nn.LSTMCell(H).initialize_carry(jax.random.key(0), (B, D))
    params = ref.init(jax.random.key(2), carry, xs_btd)
    assert_trees_allclose(mem.init(jax.random.key(2), carry, xs_btd), params, rtol=0, atol=0)  # init is nn.scan's

    def loss(params, model):
        (c, h), ys = model.apply(params, carry, xs_btd)
        return jnp.sum(ys**2) + jnp.sum(c**3)

    assert uses_memjax(lambda p: loss(p, mem), params)
    both = jax.jit(lambda p: (jax.value_and_grad(loss)(p, ref), jax.value_and_grad(loss)(p, mem)))
    (value_ref, grad_ref), (value_mem, grad_mem) = both(params)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)
    assert_trees_allclose(grad_mem, grad_ref)


@needs_flax
def test_linen_custom_cell_rngs_carry_and_intermediates_match_nn_scan(xs_btd):
    class NoisyCell(nn.Module):
        """A custom cell with dropout, a broadcast input, a carried counter and sown intermediates."""

        @nn.compact
        def __call__(self, carry, x, context):
            if self.has_variable("counter", "n"):  # made by the caller: nn.scan cannot create carried variables
                counter = self.variable("counter", "n", jnp.zeros, (), jnp.int32)
                counter.value += 1
            h = jnp.tanh(nn.Dense(H)(carry) + nn.Dense(H, use_bias=False)(x) + context)
            h = nn.Dropout(0.3, deterministic=False)(h)
            self.sow("intermediates", "h", h)
            return h, jnp.sum(h, axis=-1)

    def cell(scan, **kwargs):
        return scan(
            NoisyCell,
            variable_broadcast="params",
            variable_carry="counter",
            variable_axes={"intermediates": 0},
            split_rngs={"params": False, "dropout": True},
            in_axes=(1, nn.broadcast),
            out_axes=1,
            reverse=True,
            **kwargs,
        )()

    ref, mem = cell(nn.scan), cell(memjax.flax.scan, memory=0.3, kind="msm")
    context, h0 = jnp.ones((B, H)), jnp.zeros((B, H))
    params = ref.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, h0, xs_btd, context)["params"]

    def loss(params, context, model):
        variables = {"params": params, "counter": {"n": jnp.zeros((), jnp.int32)}}
        (h, ys), new = model.apply(
            variables, h0, xs_btd, context, rngs={"dropout": jax.random.key(5)}, mutable=["counter", "intermediates"]
        )
        value = jnp.sum(ys**2) + jnp.sum(h**3) + jnp.sum(new["intermediates"]["h"][0] ** 2)
        return value, new

    def both(params, context):
        return [jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, context, m) for m in (ref, mem)]

    assert uses_memjax(lambda p, c: loss(p, c, mem), params, context)
    ((value_ref, new_ref), grad_ref), ((value_mem, new_mem), grad_mem) = jax.jit(both)(params, context)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)  # same dropout masks as nn.scan
    assert int(new_mem["counter"]["n"]) == T
    assert new_mem["intermediates"]["h"][0].shape == (T, B, H)
    assert_trees_allclose(new_mem, new_ref)
    assert_trees_allclose(grad_mem, grad_ref)  # parameters and the broadcast input


@needs_flax
def test_linen_method_decorator(xs_btd):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            def body(cell, carry, x):
                return cell(carry, x)

            scanned = memjax.flax.scan(
                body, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1, memory=0.5
            )
            cell = nn.GRUCell(H)
            carry = cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
            return scanned(cell, carry, xs)[1]

    class Reference(nn.Module):
        @nn.compact
        def __call__(self, xs):
            scanned = nn.scan(
                lambda cell, c, x: cell(c, x),
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
            )
            cell = nn.GRUCell(H)
            return scanned(cell, cell.initialize_carry(jax.random.key(0), xs[:, 0].shape), xs)[1]

    params = Reference().init(jax.random.key(3), xs_btd)
    assert_trees_allclose(Model().init(jax.random.key(3), xs_btd), params, rtol=0, atol=0)
    assert uses_memjax(lambda p: Model().apply(p, xs_btd), params)
    np.testing.assert_allclose(
        jax.jit(Model().apply)(params, xs_btd), Reference().apply(params, xs_btd), rtol=RTOL, atol=ATOL
    )


@needs_flax
def test_linen_scan_over_layers_with_variable_axes():
    """Stacked per-step parameters (variable_axes={"params": 0}) are scanned like xs and get their gradients."""

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return jnp.tanh(nn.Dense(H)(x)), None

    def stack(scan, **kwargs):
        return scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=4, **kwargs)()

    ref, mem = stack(nn.scan), stack(memjax.flax.scan, memory=0.4)
    x = jax.random.normal(jax.random.key(0), (B, H))
    params = ref.init(jax.random.key(1), x, None)
    assert params["params"]["Dense_0"]["kernel"].shape == (4, H, H)

    def loss(params, model):
        return jnp.sum(model.apply(params, x, None)[0] ** 2)

    assert uses_memjax(lambda p: loss(p, mem), params)
    grad_ref, grad_mem = jax.jit(lambda p: (jax.grad(loss)(p, ref), jax.grad(loss)(p, mem)))(params)
    assert_trees_allclose(grad_mem, grad_ref)


@needs_flax
def test_flax_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax", None)
    with pytest.raises(ImportError, match=r"pip install memjax\[flax\]"):
        memjax.flax._flax()


# ------------------------------------------------------------------------------------------------------------------
# Flax NNX
# ------------------------------------------------------------------------------------------------------------------


@needs_flax
def test_nnx_lstm_matches_nnx_scan():
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    cell = nnx.LSTMCell(D, H, rngs=nnx.Rngs(0))
    carry = cell.initialize_carry((B, D), nnx.Rngs(1))

    def loss_mem(cell):
        (c, h), ys = memjax.flax.nnx_scan(cell, carry, xs, memory=0.3)
        return jnp.sum(ys**2) + jnp.sum(c**3)

    def loss_ref(cell):
        @nnx.scan(in_axes=(None, nnx.Carry, 0), out_axes=(nnx.Carry, 0))
        def run(cell, carry, x):
            return cell(carry, x)

        (c, h), ys = run(cell, carry, xs)
        return jnp.sum(ys**2) + jnp.sum(c**3)

    graphdef, state = nnx.split(cell)
    assert uses_memjax(lambda s: loss_mem(nnx.merge(graphdef, s)), state)

    @nnx.jit
    def both(cell):
        return nnx.value_and_grad(loss_ref)(cell), nnx.value_and_grad(loss_mem)(cell)

    (value_ref, grad_ref), (value_mem, grad_mem) = both(cell)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)
    assert_trees_allclose(grad_mem, grad_ref)


@needs_flax
def test_nnx_state_updates_and_dropout_match_a_python_loop():
    class Cell(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(D + H, H, rngs=rngs)
            self.dropout = nnx.Dropout(0.3, rngs=rngs)
            self.norm = nnx.BatchNorm(H, rngs=rngs)

        def __call__(self, carry, x):
            h = jnp.tanh(self.linear(jnp.concatenate([carry, x], axis=-1)))
            h = self.norm(self.dropout(h))
            return h, jnp.sum(h, axis=-1)

    xs = jax.random.normal(jax.random.key(1), (T, B, D))

    def loss_mem(cell):
        h, ys = memjax.flax.nnx_scan(cell, jnp.zeros((B, H)), xs, memory=0.3)
        return jnp.sum(ys**2) + jnp.sum(h**2)

    def loss_loop(cell):
        h, ys = jnp.zeros((B, H)), []
        for x in xs:
            h, y = cell(h, x)
            ys.append(y)
        return jnp.sum(jnp.stack(ys) ** 2) + jnp.sum(h**2)

    @nnx.jit
    def run(cell_mem, cell_loop):
        return nnx.value_and_grad(loss_mem)(cell_mem), nnx.value_and_grad(loss_loop)(cell_loop)

    cell_mem, cell_loop = Cell(nnx.Rngs(0, dropout=3)), Cell(nnx.Rngs(0, dropout=3))
    (value_mem, grad_mem), (value_loop, grad_loop) = run(cell_mem, cell_loop)
    np.testing.assert_allclose(value_mem, value_loop, rtol=RTOL)
    assert_trees_allclose(grad_mem, grad_loop, rtol=1e-4, atol=1e-5)  # batch norm amplifies round-off
    # The state each step changed (RNG counters, batch statistics) was written back, as by the loop.
    assert_trees_allclose(nnx.state(cell_mem, nnx.BatchStat), nnx.state(cell_loop, nnx.BatchStat))
    assert_trees_allclose(nnx.state(cell_mem, nnx.RngCount), nnx.state(cell_loop, nnx.RngCount), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# Haiku
# ------------------------------------------------------------------------------------------------------------------


@needs_haiku
def test_haiku_dynamic_unroll_matches_hk_dynamic_unroll(xs_btd):
    def model(unroll, **kwargs):
        def forward(xs):
            core = hk.LSTM(H)
            ys, state = unroll(core, xs, core.initial_state(B), time_major=False, **kwargs)
            return jnp.sum(ys**2) + jnp.sum(state.cell**3)

        return hk.transform(forward)

    ref, mem = model(hk.dynamic_unroll), model(memjax.haiku.dynamic_unroll, memory=0.3)
    params = ref.init(jax.random.key(0), xs_btd)
    assert_trees_allclose(mem.init(jax.random.key(0), xs_btd), params, rtol=0, atol=0)
    assert uses_memjax(lambda p: mem.apply(p, None, xs_btd), params)
    both = jax.jit(
        lambda p: (jax.value_and_grad(ref.apply)(p, None, xs_btd), jax.value_and_grad(mem.apply)(p, None, xs_btd))
    )
    (value_ref, grad_ref), (value_mem, grad_mem) = both(params)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)
    assert_trees_allclose(grad_mem, grad_ref)


@needs_haiku
def test_haiku_scan_with_state_and_rng_matches_hk_scan(xs_btd):
    def model(scan, **kwargs):
        def forward(xs):
            linear = hk.Linear(H)

            def step(h, x):
                count = hk.get_state("count", [], jnp.int32, init=jnp.zeros)
                hk.set_state("count", count + 1)
                h = jnp.tanh(linear(jnp.concatenate([h, x], axis=-1)))
                h = hk.dropout(hk.next_rng_key(), 0.3, h)
                return h, jnp.sum(h, axis=-1)

            h, ys = scan(step, jnp.zeros((B, H)), jnp.swapaxes(xs, 0, 1), reverse=True, **kwargs)
            return jnp.sum(ys**2) + jnp.sum(h**2)

        return hk.transform_with_state(forward)

    ref, mem = model(hk.scan), model(memjax.haiku.scan, memory=0.3)
    params, state = ref.init(jax.random.key(0), xs_btd)
    rng = jax.random.key(3)

    def both(params):
        return [jax.value_and_grad(m.apply, has_aux=True)(params, state, rng, xs_btd) for m in (ref, mem)]

    ((value_ref, state_ref), grad_ref), ((value_mem, state_mem), grad_mem) = jax.jit(both)(params)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)  # same dropout keys as hk.scan
    assert int(state_mem["~"]["count"]) == T
    assert_trees_allclose(state_mem, state_ref, rtol=0, atol=0)
    assert_trees_allclose(grad_mem, grad_ref)


@needs_haiku
def test_haiku_scan_outside_transform_raises():
    with pytest.raises(ValueError, match="inside hk.transform"):
        memjax.haiku.scan(lambda c, x: (c, x), 0.0, jnp.zeros(3))


# ------------------------------------------------------------------------------------------------------------------
# Equinox: no adapter needed; its checkpointed scan, an independent oracle
# ------------------------------------------------------------------------------------------------------------------


@needs_equinox
def test_equinox_idiom_matches_lax_scan():
    """Close over the eqx.Module inside the step; memjax.scan hoists its arrays and returns their gradients."""
    cell = eqx.nn.GRUCell(D, H, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, B, D))

    def loss(cell, scan, **kwargs):
        def step(h, x):
            h = jax.vmap(cell)(x, h)  # eqx cells are unbatched: (input, hidden) -> hidden
            return h, jnp.sum(h, axis=-1)

        h, ys = scan(step, jnp.zeros((B, H)), xs, **kwargs)
        return jnp.sum(ys**2) + jnp.sum(h**3)

    @eqx.filter_jit
    def both(cell):
        return (
            eqx.filter_value_and_grad(loss)(cell, jax.lax.scan),
            eqx.filter_value_and_grad(loss)(cell, memjax.scan, memory=0.3),
        )

    (value_ref, grad_ref), (value_mem, grad_mem) = both(cell)
    np.testing.assert_allclose(value_mem, value_ref, rtol=RTOL)
    assert_trees_allclose(eqx.filter(grad_mem, eqx.is_array), eqx.filter(grad_ref, eqx.is_array))


@pytest.mark.parametrize("checkpoints", [3])
def test_gradient_equals_equinox_checkpointed_scan(checkpoints):
    eqxi = pytest.importorskip("equinox.internal")

    def eqx_scan(f, init, xs, **_):
        return eqxi.scan(f, init, xs, kind="checkpointed", checkpoints=checkpoints)

    # memjax with hsm and the same number of stored carries (the initial one included) as equinox's checkpoints
    params, init, xs = tiny_lstm(12)
    memory = (checkpoints + 1) * tree_bytes(init)
    out, grads = value_and_grads(memjax.scan, lstm_step, params, init, xs, memory=memory, kind="hsm")
    eqx_out, eqx_grads = value_and_grads(eqx_scan, lstm_step, params, init, xs)
    assert_trees_close(out, eqx_out, what="(carry, ys)")
    assert_trees_close(grads, eqx_grads, what="grad")


# ------------------------------------------------------------------------------------------------------------------
# optax training loop with checkpoints
# ------------------------------------------------------------------------------------------------------------------


def _rnn_problem():
    """A tiny recurrent regression whose loss runs memjax.scan, with batches that are a function of the step."""

    def loss_fn(params, batch, rng):
        xs, target = batch
        noise = 0.01 * jax.random.normal(rng, target.shape)  # the rng is used: resume must restore it

        def step(h, x):
            h = jnp.tanh(h @ params["w"] + x @ params["u"])
            return h, None

        h, _ = memjax.scan(step, jnp.zeros((B, H)), xs, memory=0.5)
        return jnp.mean((h @ params["v"] - target - noise) ** 2), {"h_norm": jnp.linalg.norm(h)}

    def batches(step):
        key = jax.random.fold_in(jax.random.key(42), step)
        xs = jax.random.normal(key, (T, B, D))
        return xs, jnp.sum(xs, axis=(0, 2))[:, None]

    def fresh_state(seed):
        k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
        params = {
            "w": 0.3 * jax.random.normal(k1, (H, H)),
            "u": jax.random.normal(k2, (D, H)),
            "v": jax.random.normal(k3, (H, 1)),
        }
        return training.init_train_state(params, optimizer, jax.random.key(seed + 1))

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    return loss_fn, batches, fresh_state, optimizer


def test_train_resume_reproduces_an_uninterrupted_run(tmp_path):
    loss_fn, batches, fresh_state, optimizer = _rnn_problem()
    train_step = training.make_train_step(loss_fn, optimizer, has_aux=True)  # one compilation for both runs
    total, interrupted_at = 7, 3

    straight, history = training.train(
        loss_fn, optimizer, fresh_state(0), batches, total, has_aux=True, train_step=train_step
    )
    assert [r["step"] for r in history] == list(range(1, total + 1))

    checkpoints = tmp_path / "ckpt"
    training.train(
        loss_fn,
        optimizer,
        fresh_state(0),
        batches,
        interrupted_at,
        has_aux=True,
        checkpoint_dir=checkpoints,
        checkpoint_every=2,
        train_step=train_step,
    )
    assert training.latest_checkpoint(checkpoints).endswith(f"ckpt_{interrupted_at:08d}.npz")
    # A fresh process: a differently initialised state only serves as the template the checkpoint fills.
    resumed, rest = training.train(
        loss_fn,
        optimizer,
        fresh_state(7),
        batches,
        total,
        has_aux=True,
        checkpoint_dir=checkpoints,
        train_step=train_step,
    )
    assert [r["step"] for r in rest] == list(range(interrupted_at + 1, total + 1))
    assert [r["loss"] for r in rest] == [r["loss"] for r in history[interrupted_at:]]
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit
    assert sorted(p.name for p in checkpoints.iterdir()) == ["ckpt_00000003.npz", "ckpt_00000007.npz"]  # keep=2


def test_checkpoint_round_trips_and_rejects_other_structures(tmp_path):
    _, _, fresh_state, _ = _rnn_problem()
    state = fresh_state(0)
    for name in ("state.npz", "state.pkl"):
        path = training.save_checkpoint(tmp_path / name, state)
        restored = training.load_checkpoint(path, like=fresh_state(1))
        assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
        assert jnp.array_equal(jax.random.key_data(restored.rng), jax.random.key_data(state.rng))
        assert_trees_allclose(restored.params, state.params, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs like="):
        training.load_checkpoint(tmp_path / "state.npz")
    with pytest.raises(ValueError, match="leaves"):
        training.load_checkpoint(tmp_path / "state.npz", like=state.params)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
