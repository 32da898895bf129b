"""Trust: memjax.scan agrees with jax.lax.scan on generated programs, on every dtype, on bad input (clear errors),
across devices, at very long lengths, deterministically, and against an independent checkpointed scan.

Property tests run 25 examples by default; ``HYPOTHESIS_PROFILE=long`` runs 500.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import memjax
from tests.helpers import (
    ROOT,
    assert_trees_bitwise_equal,
    assert_trees_close,
    lax_scan,
    least_bytes,
    least_bytes_traced,
    lstm_init,
    lstm_params,
    lstm_step,
    program_size,
    scalar_of,
    value_and_grads,
)

KEY = jax.random.PRNGKey(0)

settings.register_profile(
    "long", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
if os.environ.get("HYPOTHESIS_PROFILE") == "long":
    PROPERTY_SETTINGS = settings(settings.get_profile("long"))
else:  # applied to this file's tests only: the global default profile is left alone
    PROPERTY_SETTINGS = settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )


# ------------------------------------------------------------------------------------------------------------------
# A small family of step functions
# ------------------------------------------------------------------------------------------------------------------


def affine_case(length, with_xs, key):
    n = 3
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"A": jax.random.normal(k1, (n, n)) * 0.4, "c": jax.random.normal(k2, (n,)) * 0.1}
    init = jax.random.normal(k3, (n,))
    xs = jax.random.normal(k4, (length, n)) if with_xs else None

    def step(params, h, x):
        h = params["A"] @ h + params["c"] + (0.0 if x is None else x)
        return h, h * 2.0

    return step, params, init, xs


def lstm_case(length, with_xs, key):
    b, h, n_in = 2, 3, 2
    k1, k2, k3 = jax.random.split(key, 3)
    params = lstm_params(k1, n_in, h)
    init = lstm_init(b, h, key=k2)
    xs = jax.random.normal(k3, (length, b, n_in)) if with_xs else None

    def step(params, carry, x):
        if x is None:
            x = jnp.cos(carry[0][:, :n_in])
        return lstm_step(params, carry, x)

    return step, params, init, xs


MIXED_CONST = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3)  # a concrete closed-over array


def mixed_case(length, with_xs, key):
    """A dict carry of mixed shapes and dtypes with int and bool leaves; ys with None leaves."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    params = {"s": jax.random.normal(k1, (2, 3)) * 0.5, "w": jax.random.normal(k2, (4,)) * 0.5}
    init = {
        "a": jax.random.normal(k3, (2, 3)),
        "v": jax.random.normal(k4, (4,)),
        "i": jnp.asarray(1, jnp.int32),
        "flag": jnp.array([True, False, True]),
    }
    xs = {"u": jax.random.normal(k5, (length, 3)), "k": jnp.arange(length, dtype=jnp.int32) % 3} if with_xs else None

    def step(params, carry, x):
        u = jnp.zeros(3) if x is None else x["u"]
        k = 0 if x is None else x["k"]
        a = jnp.tanh(carry["a"] * params["s"] + MIXED_CONST * u + jnp.where(carry["flag"], 0.1, -0.1))
        v = 0.9 * carry["v"] + jnp.sin(jnp.sum(a)) * params["w"] + 0.01 * carry["i"].astype(jnp.float32)
        i = carry["i"] + 1 + k
        flag = jnp.logical_xor(carry["flag"], jnp.sum(a, axis=0) > 0)
        new = {"a": a, "v": v, "i": i, "flag": flag}
        return new, {"a": a, "none": None, "pair": (v * carry["v"], None), "i": i, "flag": flag}

    return step, params, init, xs


FAMILIES = {"affine": affine_case, "lstm": lstm_case, "mixed": mixed_case}


def traced_store_all_bytes(step, params, init, xs, length):
    found = []

    def probe(params, init, xs):
        # budget_bytes of memory=1.0 is store-all resolved (ScanPlan.store_all_bytes is negative at length 0)
        found.append(memjax.plan_scan(functools.partial(step, params), init, xs, length, memory=1.0).budget_bytes)
        return jnp.zeros(())

    jax.eval_shape(probe, params, init, xs)
    return found[0]


@st.composite
def scan_cases(draw):
    family = draw(st.sampled_from(sorted(FAMILIES)))
    length = draw(st.integers(0, 64))
    with_xs = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    reverse = draw(st.booleans())
    unroll = draw(st.sampled_from([1, 2, 3, True] if length <= 16 else [1, 2, 3]))
    kind = draw(st.sampled_from(memjax.planning.KINDS))
    position = draw(st.floats(0.0, 1.0))  # 0: the least budget, 1: store-all
    notation = draw(st.sampled_from(["int", "fraction", "string"]))
    pass_length = draw(st.booleans()) or not with_xs
    return family, length, with_xs, seed, reverse, unroll, kind, position, notation, pass_length


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY_SETTINGS
@given(scan_cases())
def test_property_values_and_gradients_match_lax_scan(case):
    family, length, with_xs, seed, reverse, unroll, kind, position, notation, pass_length = case
    step, params, init, xs = FAMILIES[family](length, with_xs, jax.random.PRNGKey(seed))
    least = least_bytes_traced(step, params, init, xs, length, kind=kind)
    store_all = traced_store_all_bytes(step, params, init, xs, length)
    assert least <= store_all
    budget = least + int(position * (store_all - least))
    memory = budget
    if notation == "fraction" and math.floor(budget / store_all * store_all) >= least:
        memory = budget / store_all
    elif notation == "string":
        memory = f"{budget}B"
    kwargs = dict(length=length if pass_length else None, reverse=reverse, unroll=unroll)
    event(f"kind={kind}")
    event("length<=1 (lax.scan path)" if length <= 1 else "length>=2 (executor)")
    out, grads = value_and_grads(memjax.scan, step, params, init, xs, memory=memory, kind=kind, **kwargs)
    ref_out, ref_grads = value_and_grads(lax_scan, step, params, init, xs, **kwargs)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad (params, init, xs)")


# ------------------------------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------------------------------

B, H, NIN, T = 2, 4, 3, 12


def test_float64_with_x64():
    with jax.enable_x64(True):
        step, params, init, xs = affine_case(T, True, KEY)
        params, init, xs = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (params, init, xs))
        memory = least_bytes_traced(step, params, init, xs)
        out, grads = value_and_grads(memjax.scan, step, params, init, xs, memory=memory)
        ref_out, ref_grads = value_and_grads(lax_scan, step, params, init, xs)
    assert np.asarray(out[0]).dtype == np.float64 and np.asarray(grads[0]["A"]).dtype == np.float64
    assert_trees_close(out, ref_out, rtol=1e-10, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-10, what="grad")


@pytest.mark.parametrize("dtype,rtol", [(jnp.bfloat16, 3e-2), (jnp.float16, 3e-3)])
def test_half_precision_lstm(dtype, rtol):
    params = lstm_params(jax.random.fold_in(KEY, 1), NIN, H, dtype)
    init = lstm_init(B, H, dtype, key=jax.random.fold_in(KEY, 2))
    xs = jax.random.normal(jax.random.fold_in(KEY, 3), (T, B, NIN)).astype(dtype)
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


# ------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument
# ------------------------------------------------------------------------------------------------------------------

P = lstm_params(jax.random.fold_in(KEY, 1), NIN, H)
INIT = lstm_init(B, H, key=jax.random.fold_in(KEY, 2))
XS = jax.random.normal(jax.random.fold_in(KEY, 3), (T, B, NIN))
F = functools.partial(lstm_step, P)


@pytest.mark.parametrize("kind", ["msm", "hsm", "chen", "store_all"])
def test_memory_below_the_minimum_names_the_minimum_in_bytes(kind):
    least = least_bytes(F, INIT, XS, kind=kind)
    for call in (memjax.scan, memjax.plan_scan, memjax.explain):
        with pytest.raises(ValueError) as info:
            call(F, INIT, XS, memory=least - 1, kind=kind)
        message = str(info.value)
        assert "memory" in message and str(least) in message, message


@pytest.mark.parametrize("memory", [0, -5, -0.5, 0.0, float("nan"), float("-inf"), "0B", "0%", "0KiB", -1024])
def test_nonpositive_or_nan_memory(memory):
    with pytest.raises(ValueError, match="memory"):
        memjax.scan(F, INIT, XS, memory=memory)


@pytest.mark.parametrize("memory", ["lots", "12 parsecs", "", "5 %%", "MiB", "1.2.3KiB", "-3%"])
def test_unparseable_memory_strings(memory):
    with pytest.raises(ValueError, match="memory"):
        memjax.scan(F, INIT, XS, memory=memory)


@pytest.mark.parametrize("memory", [1.5, 1.0000001, float("inf"), "150%"])
def test_fractions_outside_0_1(memory):
    with pytest.raises(ValueError, match="memory"):
        memjax.scan(F, INIT, XS, memory=memory)


@pytest.mark.parametrize("memory", [True, [1], object()])
def test_memory_of_a_wrong_type(memory):
    with pytest.raises((ValueError, TypeError), match="memory"):
        memjax.scan(F, INIT, XS, memory=memory)


@pytest.mark.parametrize("kind", ["revolve", "MSM", "", None, 3])
def test_unknown_kind(kind):
    with pytest.raises(ValueError, match="kind"):
        memjax.scan(F, INIT, XS, kind=kind)


def test_xs_leaves_with_different_leading_sizes():
    args = (lambda c, x: (c, None), jnp.zeros(2), (jnp.zeros((5, 2)), jnp.zeros((6, 2))))
    with pytest.raises(ValueError) as expected:
        jax.lax.scan(*args)
    with pytest.raises(ValueError) as info:
        memjax.scan(*args)
    assert str(expected.value).splitlines()[0] in str(info.value)


@pytest.mark.parametrize("length", [T - 1, T + 1])
def test_length_disagreeing_with_xs(length):
    with pytest.raises(ValueError, match="length"):
        memjax.scan(F, INIT, XS, length=length)


def test_no_xs_and_no_length():
    with pytest.raises(ValueError, match="length"):
        memjax.scan(lambda c, x: (c, None), jnp.zeros(2))


@pytest.mark.parametrize("bad", ["structure", "shape", "dtype"])
def test_carry_of_another_type_is_a_type_error_like_lax_scan(bad):
    def f(carry, x):
        h, c = carry
        if bad == "structure":
            return (h, c, h), h
        if bad == "shape":
            return (h, c[:, :1]), h
        return (h, c.astype(jnp.float16)), h

    with pytest.raises(TypeError):
        jax.lax.scan(f, INIT, XS)
    with pytest.raises(TypeError, match="carry"):
        memjax.scan(f, INIT, XS)


def test_string_leaf_in_init():
    with pytest.raises((TypeError, ValueError), match="init"):
        memjax.scan(lambda c, x: (c, None), {"h": jnp.zeros(2), "name": "lstm"}, XS)


def test_string_leaf_in_xs():
    """lax.scan's own exception and text."""
    xs = {"u": XS, "name": "lstm"}
    with pytest.raises(TypeError) as theirs:
        jax.lax.scan(lambda c, x: (c, None), jnp.zeros(2), xs)
    with pytest.raises(TypeError, match="'lstm'") as ours:
        memjax.scan(lambda c, x: (c, None), jnp.zeros(2), xs)
    assert str(ours.value).splitlines()[0] == str(theirs.value).splitlines()[0]


# ------------------------------------------------------------------------------------------------------------------
# Several devices (a subprocess: XLA_FLAGS must be set before jax is imported)
# ------------------------------------------------------------------------------------------------------------------


@functools.cache
def multidevice_results() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multidevice_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_multidevice_jit_with_sharded_batch():
    result = multidevice_results()
    assert result["devices"] == 8
    assert result["jit_sharded_err"] <= 1.0, result  # within rtol 1e-5 of single-device lax.scan
    temps = [result["jit_temp_bytes"][m] for m in ("0.5", "0.2", "0.05")]
    assert temps[0] > temps[1] > temps[2], temps


@pytest.mark.slow
def test_multidevice_shard_map():
    result = multidevice_results()
    assert "shard_map_error" not in result, result["shard_map_error"]
    assert result["shard_map_err"] <= 1.0, result
    temps = [result["shard_map_temp_bytes"][m] for m in ("0.5", "0.2", "0.05")]
    assert temps[0] > temps[1] > temps[2], temps


# ------------------------------------------------------------------------------------------------------------------
# Very long sequences
# ------------------------------------------------------------------------------------------------------------------

LONG_T = 10**5
LONG_MEMORY = "16KiB"  # 512 carries of 32 bytes. hsm: msm's solver takes minutes at T=10^4 already (default budget)


def long_model(length):
    params = lstm_params(jax.random.fold_in(KEY, 11), 2, 4)
    xs = jax.random.normal(jax.random.fold_in(KEY, 12), (length, 1, 2))
    return params, lstm_init(1, 4), xs


def long_loss(scan_fn, params, init, xs, **kw):
    carry, ys = scan_fn(functools.partial(lstm_step, params), init, xs, **kw)
    return jnp.mean(ys**2) + jnp.sum(carry[1])


@pytest.mark.slow
def test_very_long_sequence_gradient():
    params, init, xs = long_model(LONG_T)
    plan = memjax.plan_scan(functools.partial(lstm_step, params), init, xs, memory=LONG_MEMORY, kind="hsm")
    assert plan.forward_count < 4 * LONG_T and plan.stored_bytes <= plan.budget_bytes
    grad = jax.jit(jax.grad(functools.partial(long_loss, memjax.scan, memory=LONG_MEMORY, kind="hsm"), argnums=(0, 2)))(
        params, init, xs
    )
    ref = jax.jit(jax.grad(functools.partial(long_loss, lax_scan), argnums=(0, 2)))(params, init, xs)
    assert_trees_close(jax.device_get(grad), jax.device_get(ref), what="grad")


@pytest.mark.slow
def test_very_long_sequence_hlo_is_flat():
    sizes = {}
    for length in (100, LONG_T):
        params, init, xs = long_model(length)
        fn = jax.jit(jax.grad(functools.partial(long_loss, memjax.scan, memory=LONG_MEMORY, kind="hsm")))
        sizes[length] = program_size(fn.lower(params, init, xs).as_text())[0]  # the schedule's tables elided
    assert sizes[LONG_T] <= 1.5 * sizes[100], sizes


# ------------------------------------------------------------------------------------------------------------------
# Determinism and randomness
# ------------------------------------------------------------------------------------------------------------------


def test_two_gradient_evaluations_are_bitwise_equal():
    def loss(params, init, xs):
        carry, ys = memjax.scan(functools.partial(lstm_step, params), init, xs, memory=0.2, kind="msm")
        return scalar_of((carry, ys))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    first = jax.device_get(grad(P, INIT, XS))
    second = jax.device_get(grad(P, INIT, XS))
    assert_trees_bitwise_equal(first, second, what="grad")


def noisy_step(params, carry, x):
    """Dropout and noise drawn from a per-step key passed in xs: a recomputed step must draw the same."""
    key, u = x
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    k1, k2 = jax.random.split(key)
    (h, c), _ = lstm_step(params, carry, u)
    keep = jax.random.bernoulli(k1, 0.7, h.shape)
    h = jnp.where(keep, h / 0.7, 0.0) + 0.1 * jax.random.normal(k2, h.shape)
    return (h, c), h


@pytest.mark.parametrize("typed", [False, True], ids=["uint32-keys", "typed-keys"])
def test_prng_keys_in_xs_are_recomputed_identically(typed):
    keys = jax.random.split(jax.random.key(7), T)
    if not typed:
        keys = jax.random.key_data(keys)

    def run(scan_fn, **kw):
        def loss(params, init, us):
            carry, ys = scan_fn(functools.partial(noisy_step, params), init, (keys, us), **kw)
            return scalar_of((carry, ys))

        return jax.device_get(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(P, INIT, XS))

    mem = run(memjax.scan, memory=least_bytes_traced(noisy_step, P, INIT, (keys, XS), kind="msm"))
    assert_trees_close(mem, run(lax_scan), what="(loss, grads)")


# ------------------------------------------------------------------------------------------------------------------
# Differential: an independent checkpointed scan (equinox)
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoints", [3])
def test_gradient_equals_equinox_checkpointed_scan(checkpoints):
    eqxi = pytest.importorskip("equinox.internal")

    def eqx_scan(f, init, xs, **_):
        return eqxi.scan(f, init, xs, kind="checkpointed", checkpoints=checkpoints)

    # memjax with hsm and the same number of stored carries (the initial one included) as equinox's checkpoints
    memory = (checkpoints + 1) * 2 * B * H * 4
    out, grads = value_and_grads(memjax.scan, lstm_step, P, INIT, XS, memory=memory, kind="hsm")
    eqx_out, eqx_grads = value_and_grads(eqx_scan, lstm_step, P, INIT, XS)
    assert_trees_close(out, eqx_out, what="(carry, ys)")
    assert_trees_close(grads, eqx_grads, what="grad")
