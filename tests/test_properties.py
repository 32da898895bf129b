"""Property test: memjax.scan agrees with jax.lax.scan on generated programs.

Hypothesis draws a step from a small family (an affine map, the LSTM, and a dict carry of mixed shapes and dtypes
with int and bool leaves and None in ys), a length from 0 to 64, with or without xs, reverse, unroll, the kind,
and a budget anywhere from the least memjax accepts to store-all, written as bytes, a fraction or a string. The
oracle is lax.scan on the same program: values and gradients (w.r.t. params, init and xs) must agree.

25 examples by default; ``HYPOTHESIS_PROFILE=long`` runs 500.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import memjax
from tests.helpers import (
    affine_case,
    assert_trees_close,
    lax_scan,
    least_bytes_traced,
    lstm_init,
    lstm_params,
    lstm_step,
    value_and_grads,
)

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
# A small family of step functions (the affine one is tests.helpers.affine_case, shared with test_dtypes)
# ------------------------------------------------------------------------------------------------------------------


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
