"""Long sequences: memjax.scan's gradient at T = 10^5 and a compiled program that does not grow with the length.

The gradient's oracle is lax.scan (values within float32 round-off). The program's size is the lowered text with
the schedule's integer tables elided (tests.helpers.program_size): at T = 10^4 or 10^5 it stays within 1.5 times
its size at T = 100, and the tables hold 16 bytes per action and 8 per step, nothing more.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

import memjax
from tests.helpers import (
    KEY,
    NIN,
    B,
    H,
    assert_trees_close,
    lax_scan,
    lstm_init,
    lstm_params,
    lstm_step,
    program_size,
)

# ------------------------------------------------------------------------------------------------------------------
# Program size at T = 10^4
# ------------------------------------------------------------------------------------------------------------------


def _hlo_size(length, kind, memory):
    p = lstm_params(jax.random.fold_in(KEY, 9), NIN, H)
    xs = jnp.ones((length, B, NIN))

    def loss(params, xs):
        carry, ys = memjax.scan(functools.partial(lstm_step, params), lstm_init(B, H), xs, memory=memory, kind=kind)
        return jnp.sum(ys**2)

    plan = memjax.plan_scan(functools.partial(lstm_step, p), lstm_init(B, H), xs, memory=memory, kind=kind)
    return program_size(jax.jit(jax.grad(loss)).lower(p, xs).as_text()), len(plan.schedule)


def _assert_flat(kind, memory):
    (small, _), _ = _hlo_size(100, kind, memory)
    (large, tables), actions = _hlo_size(10**4, kind, memory)
    assert large <= 1.5 * small, f"program: T=100 {small} chars, T=10^4 {large} chars ({large / small:.2f}x)"
    # The schedule itself is data: 4 int32 columns per action and 2 per step, nothing more.
    assert tables <= 16 * actions + 8 * 10**4, (tables, actions)


def test_hlo_size_does_not_grow_with_length_hsm():
    _assert_flat("hsm", 0.05)


@pytest.mark.slow
def test_hlo_size_does_not_grow_with_length_msm():
    # msm's solver takes tens of seconds at T=10^4: slow. The same budget in bytes (32 carries) for both lengths.
    _assert_flat("msm", 2048)


# ------------------------------------------------------------------------------------------------------------------
# T = 10^5
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
# A GRU of 64 units over 10^5 steps within a few megabytes
# ------------------------------------------------------------------------------------------------------------------

GRU_MEMORY = "4MiB"  # lax.scan's gradient needs about 2 GiB here


def _gru_problem(length):
    from memjax.models import gru

    params = gru.init_params(jax.random.fold_in(KEY, 21), 16, 64)
    xs = jax.random.normal(jax.random.fold_in(KEY, 22), (length, 8, 16))
    return params, gru.initial_carry(8, 64), xs


def _gru_body(params):
    """The GRU step, its output the scalar ``mean(h ** 2)`` (ys of T floats, not T hidden states)."""
    from memjax.models import gru

    def body(h, x):
        h, _ = gru.step(params, h, x)
        return h, jnp.mean(h**2)

    return body


def _gru_loss(scan_fn, params, h0, xs, **kw):
    h, ys = scan_fn(_gru_body(params), h0, xs, **kw)
    return jnp.mean(ys) + jnp.sum(h)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["msm", "hsm"])
def test_gru_over_10_5_steps_within_a_few_megabytes(kind):
    """The gradient equals lax.scan's (f32), and XLA's temp memory is within 2% of memjax.explain's prediction
    (stored states plus the working set): benchmarks/results/long_sequences.md has the same at 10^6."""
    params, h0, xs = _gru_problem(LONG_T)
    loss = functools.partial(_gru_loss, memjax.scan, memory=GRU_MEMORY, kind=kind)
    grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
    compiled = grad.lower(params, h0, xs).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    explanation = memjax.explain(_gru_body(params), h0, xs, memory=GRU_MEMORY, kind=kind, verbose=False)
    # The gradient flows to xs and the parameters: their cotangent buffers are its output, not temp memory.
    predicted = (
        explanation.stored_bytes
        + explanation.working_bytes
        - explanation.xs_cotangent_bytes
        - explanation.parameter_cotangent_bytes
    )
    assert explanation.stored_bytes <= explanation.budget_bytes == 4 * 2**20
    assert abs(temp - predicted) <= 0.02 * predicted, (temp, predicted)
    reference = jax.jit(jax.grad(functools.partial(_gru_loss, lax_scan), argnums=(0, 2)))(params, h0, xs)
    assert_trees_close(jax.device_get(compiled(params, h0, xs)), jax.device_get(reference), what="grad")
