"""Determinism and randomness: memjax.scan's gradient is the same bit for bit each time it runs, and a step that
draws random numbers from a PRNG key (raw uint32 or typed, in xs or in the carry) draws the same numbers when the
schedule recomputes it.

The oracle of the random steps is lax.scan, which never recomputes: values and gradients within float32
round-off, and the key returned in the carry equal to lax.scan's. A typed key is measured as its raw data.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from tests.helpers import (
    assert_trees_bitwise_equal,
    assert_trees_close,
    lax_scan,
    least_bytes_traced,
    lstm_step,
    scalar_of,
    tiny_lstm,
)

T = 12
P, INIT, XS = tiny_lstm(T)


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
# Typed PRNG keys in the carry (the adapters carry random state; so may any user)
# ------------------------------------------------------------------------------------------------------------------

KEYED_T, KEYED_B, KEYED_H = 6, 8, 5  # length, batch and width of the hidden state beside the key


def _keyed_step(w):
    def step(carry, x):
        h, key = carry
        key, sub = jax.random.split(key)
        h = jnp.tanh(h @ w + x) * jax.random.bernoulli(sub, 0.8, h.shape)
        return (h, key), jnp.sum(h)

    return step


@pytest.mark.parametrize("kind", ["msm", "hsm", "store_all"])
def test_typed_key_in_the_carry_matches_lax_scan(kind):
    xs = jax.random.normal(jax.random.key(1), (KEYED_T, KEYED_B, KEYED_H))
    init = (jnp.zeros((KEYED_B, KEYED_H)), jax.random.key(7))

    def loss(w, scan, **kwargs):
        (h, key), ys = scan(_keyed_step(w), init, xs, **kwargs)
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)  # the caller gets a key back
        return jnp.sum(h**2) + jnp.sum(ys), jax.random.key_data(key)

    w = 0.5 * jax.random.normal(jax.random.key(2), (KEYED_H, KEYED_H))
    memory = None if kind == "store_all" else 0.3
    both = jax.jit(
        lambda w: (
            jax.value_and_grad(loss, has_aux=True)(w, jax.lax.scan),
            jax.value_and_grad(loss, has_aux=True)(w, memjax.scan, memory=memory, kind=kind),
        )
    )
    ((value_ref, key_ref), grad_ref), ((value_mem, key_mem), grad_mem) = both(w)
    np.testing.assert_array_equal(key_mem, key_ref)
    np.testing.assert_allclose(value_mem, value_ref, rtol=1e-5)
    np.testing.assert_allclose(grad_mem, grad_ref, rtol=1e-5, atol=1e-6)


def test_typed_key_in_the_carry_is_measured_as_its_data():
    """plan_scan and explain see a key as its raw uint32 data (two words for the default threefry key)."""
    xs = jnp.zeros((KEYED_T, KEYED_B, KEYED_H))
    w = jnp.zeros((KEYED_H, KEYED_H))
    plan = memjax.plan_scan(_keyed_step(w), (jnp.zeros((KEYED_B, KEYED_H)), jax.random.key(7)), xs)
    assert plan.sizes.carry_bytes == KEYED_B * KEYED_H * 4 + jax.random.key_data(jax.random.key(7)).nbytes
    assert "carry" in str(
        memjax.explain(_keyed_step(w), (jnp.zeros((KEYED_B, KEYED_H)), jax.random.key(7)), xs, verbose=False)
    )
