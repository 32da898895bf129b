"""memjax.scan on every dtype a carry can have: float64 (with x64), bfloat16 and float16, complex64, int and bool
leaves (whose cotangents are float0), and NaN and inf in the data.

The oracle is jax.lax.scan on the same program: values and gradients agree within the dtype's tolerance
(tests.helpers.RTOL), dtypes and shapes included, NaN and inf in the same places.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from tests.helpers import (
    KEY,
    affine_case,
    assert_trees_close,
    lax_scan,
    least_bytes_traced,
    lstm_step,
    resolve,
    tiny_lstm,
    value_and_grads,
)

T = 12


# ------------------------------------------------------------------------------------------------------------------
# float64
# ------------------------------------------------------------------------------------------------------------------


def test_float64_with_x64(x64):
    step, params, init, xs = affine_case(T, True, KEY)
    params, init, xs = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (params, init, xs))
    memory = least_bytes_traced(step, params, init, xs)
    out, grads = value_and_grads(memjax.scan, step, params, init, xs, memory=memory)
    ref_out, ref_grads = value_and_grads(lax_scan, step, params, init, xs)
    assert np.asarray(out[0]).dtype == np.float64 and np.asarray(grads[0]["A"]).dtype == np.float64
    assert_trees_close(out, ref_out, rtol=1e-10, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-10, what="grad")


@pytest.mark.parametrize("kind,memory", [("msm", "least")])
def test_lstm_float64_matches_lax_scan(kind, memory, x64):
    p, init, xs = tiny_lstm(16, jnp.float64)
    memory = resolve(memory, kind, lstm_step, p, init, xs)
    out, grads = value_and_grads(memjax.scan, lstm_step, p, init, xs, memory=memory, kind=kind)
    ref_out, ref_grads = value_and_grads(lax_scan, lstm_step, p, init, xs)
    assert np.asarray(grads[0]["W"]).dtype == np.float64
    assert_trees_close(out, ref_out, rtol=1e-10, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-10, what="grad")


# ------------------------------------------------------------------------------------------------------------------
# Half precision, complex, int and bool, NaN and inf
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(jnp.bfloat16, 3e-2), (jnp.float16, 3e-3)])
def test_half_precision_lstm(dtype, rtol):
    params, init, xs = tiny_lstm(T, dtype)
    out, grads = value_and_grads(memjax.scan, lstm_step, params, init, xs, memory=0.3)
    ref_out, ref_grads = value_and_grads(lax_scan, lstm_step, params, init, xs)
    assert np.asarray(grads[0]["W"]).dtype == np.dtype(dtype)
    assert_trees_close(out, ref_out, rtol=rtol, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=rtol, what="grad")


def complex_step(params, h, x):
    h = params["A"] @ h + x * params["c"]
    return h, jnp.abs(h) ** 2


def test_complex64_carry():
    k = jax.random.split(jax.random.fold_in(KEY, 4), 6)
    cplx = lambda a, b: (a + 1j * b).astype(jnp.complex64)  # noqa: E731
    params = {
        "A": cplx(jax.random.normal(k[0], (3, 3)), jax.random.normal(k[1], (3, 3))) * 0.4,
        "c": cplx(jax.random.normal(k[2], (3,)), jax.random.normal(k[3], (3,))),
    }
    init = cplx(jax.random.normal(k[4], (3,)), jnp.zeros(3))
    xs = jax.random.normal(k[5], (T, 3))
    memory = least_bytes_traced(complex_step, params, init, xs) + 40
    out, grads = value_and_grads(memjax.scan, complex_step, params, init, xs, memory=memory)
    ref_out, ref_grads = value_and_grads(lax_scan, complex_step, params, init, xs)
    assert np.asarray(grads[1]).dtype == np.complex64
    assert_trees_close(out, ref_out, rtol=1e-5, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-5, what="grad")


def int_bool_step(params, carry, x):
    h = jnp.tanh(carry["h"] * params + x["u"]) * jnp.where(carry["b"], 1.0, 0.5)
    i = carry["i"] + x["k"]
    b = jnp.logical_not(carry["b"])
    return {"h": h, "i": i, "b": b}, (i, b)


def test_int_and_bool_carries_get_float0_cotangents_like_lax_scan():
    params = jnp.linspace(0.5, 1.5, 3)
    init = {"h": jnp.ones(3), "i": jnp.arange(2, dtype=jnp.int32), "b": jnp.array([True, False, True])}
    xs = {"u": jnp.sin(jnp.arange(T * 3.0)).reshape(T, 3), "k": jnp.ones((T, 2), jnp.int32)}
    out, grads = value_and_grads(memjax.scan, int_bool_step, params, init, xs, memory=0.3)
    ref_out, ref_grads = value_and_grads(lax_scan, int_bool_step, params, init, xs)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")  # dtypes and shapes included: float0 where lax has float0
    for leaf, shape in [(grads[1]["i"], (2,)), (grads[1]["b"], (3,)), (grads[2]["k"], (T, 2))]:
        assert leaf.dtype == jax.dtypes.float0 and leaf.shape == shape


def nan_step(params, h, x):
    h = 0.5 * h + jnp.sin(x) * params
    return h, h * x


def test_nan_and_inf_propagate_as_in_lax_scan():
    params = jnp.linspace(0.5, 1.5, 4)
    xs = jnp.cos(jnp.arange(T * 4.0)).reshape(T, 4)
    xs = xs.at[5, 1].set(jnp.nan).at[8, 2].set(jnp.inf).at[2, 3].set(-jnp.inf)
    init = jnp.array([0.1, jnp.inf, 0.3, 0.4])
    out, grads = value_and_grads(memjax.scan, nan_step, params, init, xs, memory=0.3)
    ref_out, ref_grads = value_and_grads(lax_scan, nan_step, params, init, xs)
    for a, e in zip(jax.tree_util.tree_leaves((out, grads)), jax.tree_util.tree_leaves((ref_out, ref_grads))):
        a, e = np.asarray(a), np.asarray(e)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e))
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e))
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    assert np.isnan(np.asarray(ref_grads[2])).any() and np.isfinite(np.asarray(ref_grads[2])).any()
