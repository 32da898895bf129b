"""Bad input to memjax.scan, memjax.plan_scan and memjax.explain: a clear error that names the argument.

Budgets below the least (the message names the least, in bytes), budgets that are not positive, not parseable,
fractions above 1 or of a wrong type, unknown kinds, xs and length that disagree, carries whose type changes,
and leaves that are not arrays. Where lax.scan refuses the same input it is the oracle: memjax raises the same
exception type (for xs, with lax.scan's first line in its message). The budget parser alone is tested in
test_budget_strings.py, and the mistakes of JAX's own scan tests in test_parity.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

import memjax
from tests.helpers import least_bytes, lstm_step, tiny_lstm

T = 12
P, INIT, XS = tiny_lstm(T)
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


def test_a_schedule_too_long_for_the_interpreter_says_so():
    """Recomputing everything over 10^5 steps (5 * 10^9 forwards) would run more rows than the interpreter's int32
    counter holds: a clear error, not an overflow or an allocation failure."""
    xs = jnp.zeros((10**5, 1))
    plan = memjax.plan_scan(lambda c, x: (c + x, c), jnp.zeros(1), xs, kind="recompute")
    assert plan.forward_count > 10**9
    with pytest.raises(ValueError, match="Give the scan more memory"):
        _ = plan.tables


@pytest.mark.parametrize("kind", ["msm", "hsm", "ism"])
def test_the_least_memory_of_a_long_scan_is_one_it_can_run(kind):
    """At 10^5 steps, storing nothing would take 5 * 10^9 forwards: the least memory is then the least whose
    schedule the interpreter can run, a relative budget below it is raised to it, and a budget in bytes below it
    names it."""
    xs = jnp.zeros((10**5, 1))
    plan = memjax.plan_scan(lambda c, x: (c + x, c), jnp.zeros(1), xs, memory=1e-9, kind=kind)
    assert plan.raised_to_least and plan.budget_bytes == plan.least_bytes > 4  # more than the carry alone
    assert plan.forward_count < 2**31 and plan.tables.rows < 2**31
    with pytest.raises(ValueError, match=f"below the least.*{plan.least_bytes} bytes"):
        memjax.plan_scan(lambda c, x: (c + x, c), jnp.zeros(1), xs, memory=plan.least_bytes - 1, kind=kind)
