"""Parity with ``jax.lax.scan``: the behaviours that JAX's own scan tests check, run on ``memjax.scan``.

Source: ``tests/lax_control_flow_test.py`` of jax-ml/jax (``LaxControlFlowTest``, the scan cases; the wheel ships
no tests, so a recent revision of the file was read), run against the installed jax 0.10.2, whose own behaviour
and messages are the reference in every test. Every test here is written afresh for memjax: it runs the same
program once with ``jax.lax.scan`` and once with ``memjax.scan`` and compares values, first-order gradients
(``jax.grad``, ``jax.vjp``, ``jax.jacrev``), forward mode (``jax.jvp``, ``jax.linearize``, ``jax.jacfwd``) and
second order (``grad(grad)``, ``jacrev(jacrev)``, ``jacfwd(jacfwd)``, ``jax.hessian``), in float64 at 1e-10 where the
comparison is numeric (float32 at 1e-5 where the case is about float32). For a mistake in the arguments, both
must raise the same exception type and memjax's message must contain ``lax.scan``'s, computed in the test by
running ``lax.scan`` on the same bad input.

Every case runs under the ``mscan`` fixture: ``memjax.scan`` with ``memory`` in (None, 0.2) and ``kind`` in
("msm", "hsm"), so each test id ends in ``[msm-None]``, ``[msm-0.2]``, ``[hsm-None]`` or ``[hsm-0.2]``. The
budget tests at the end name their budgets themselves and are parametrized over ``kind`` only. lax.scan's
results are computed once per test and shared by its four cases.

Counting: 64 test functions, 422 cases: 196 in the default run (about 60 s on 2 CPU cores), 226 more marked
``slow`` (the other jit combinations and in_axes of the parametrized families, the bfloat16 and extra-budget
variants, and the heavier gradient programs; ``-m "slow or not slow"`` runs all 422 in about 3 minutes).

Self-check: ``MEMJAX_PARITY_REFERENCE=1 python -m pytest tests/test_parity.py`` runs every parity case with
``jax.lax.scan`` on both sides (and skips the memjax-only budget tests), which must pass: a failure in the
normal run is then memjax's, not the test's.

Ported (JAX test -> tests here): 40 of JAX's scan tests and parametrized families, plus its
``jax.checkpoint``-around-scan implementations:

- testScanImpl -> test_scan_impl (jit of the scan x jit of the body)
- testScanJVP -> test_scan_jvp (jit combinations), test_scan_jacfwd_jacfwd (its order-2 forward check_grads)
- testScanLinearize -> test_scan_linearize (jit combinations)
- testScanGrad -> test_scan_grad (jit combinations), test_scan_vjp_and_jacrev,
  test_scan_jacrev_jacrev (its order-2 reverse check_grads)
- testScanHigherOrderDifferentiation -> test_scan_grad_of_grad_scalar_carry, test_scan_hessian_fwd_over_rev,
  test_scan_jvp_of_grad
- testScanRnn -> test_rnn_value_and_grad, test_rnn_jvp_and_linearize, test_rnn_hessian, test_rnn_grad_of_grad,
  test_rnn_batched_loss
- testScanVmap -> test_scan_vmap (every in_axes pair but (None, None)), test_scan_vmap_of_grad
- testScanVmapTuples -> test_scan_vmap_tuples; testScanVmapFixpoint -> test_scan_vmap_fixpoint
- test_caches_depend_on_axis_env -> test_vmap_axis_size_in_body; test_scan_vmap_collectives ->
  test_vmap_collectives_in_body; test_scan_readonly_carry_optimization -> test_length_one_scan_in_cond_under_vmap
- testIssue711 -> test_grad_of_body_that_takes_a_grad; testIssue757 -> test_jacfwd_of_body_that_takes_a_grad
- testIssue744 -> test_error_scalar_leaf_in_xs; testIssue1316 -> test_grad_with_prng_key_in_carry (raw and typed)
- testIssue1361 -> test_grad_of_jitted_scan_with_weak_carry; test_scan_hoisting_consts -> test_grad_hoisted_consts
- testScanLengthArg, test_scan_xs_none -> test_xs_none_with_length
- test_scan_reverse -> test_scan_reverse_cumsum, test_scan_reverse_grads
- test_scan_unroll (its values only) -> test_unroll_values_and_grads; testScanInvalidUnrollRaises ->
  test_error_negative_unroll; test_scan_unroll_concrete_error -> test_error_unroll_traced_under_jit
- testForiLoopIssue8152 (its scan part), testMapEmpty -> test_length_zero_under_jit_and_disable_jit
- test_scan_init_weak_type -> test_weak_int_init; plus test_weak_float_init_strict_promotion
- test_scan_constification_correctness, test_scan_forwarding_correctness -> test_forwarded_carries_and_xs
- test_scan_diff_of_print -> test_debug_print_and_callback_under_grad
- test_platform_dependent_with_primitive_with_lowering_error -> test_platform_dependent_in_body;
  test_platform_dependent_grad -> test_scan_inside_platform_dependent_grad
- test_scan_input_to_output_forwarding (its values) -> test_ys_that_are_xs
- testCallableErrors (scan) -> test_error_not_callable; testScanBodyOutputError -> test_error_body_output_not_pair
- testScanBodyCarryPytreeMismatchErrors, testScanMetadataError -> test_error_carry_structure (6 mistakes)
- testScanBodyCarryTypeMismatchErrors -> test_error_carry_type (4 mistakes)
- test_scan_length_concrete_error -> test_error_length_traced_under_jit
- test_xla_cpu_gpu_loop_cond_bug -> test_linearize_cond_in_body
- SCAN_IMPLS' new_checkpoint / new_checkpoint2 (jax.checkpoint around scan) -> test_checkpoint_around_scan
- Brief-only behaviours, in the spirit of the file: test_error_xs_lengths_differ, test_error_length_disagrees,
  test_error_no_xs_no_length, test_pytree_carry_and_ys, test_int_and_bool_carries, test_closure_over_tracers,
  test_custom_jvp_in_body, test_custom_jvp_in_body_forward_mode, test_custom_vjp_in_body, test_scan_of_scan,
  test_scan_jacfwd, test_float32_grads,
  test_lengths_zero_and_one, test_relative_budgets_never_raise_on_short_sequences,
  test_bytes_budget_below_the_least_names_it.

Left out, because they check lax.scan's internals rather than what it computes:

- test_scan_unroll (the jaxpr/HLO sizes and ``while(`` in the HLO: memjax's program differs by design; the
  values and gradients under ``unroll`` are ported), test_scan_lowering_doesnt_introduce_singleton (HLO text),
  testIssue810 (counts dynamic-update-slices in lax.scan's HLO).
- test_scan_typecheck_param (mutates the params of a ``scan`` jaxpr equation), test_scan_input_to_output_forwarding
  and test_scan_diff_of_print (count the outputs / equations of lax.scan's jaxpr; the behaviours are ported).
- test_scan_vjp_forwards_extensive_residuals (inspects lax.scan's VJP closure for the residual ``x``).
- SCAN_IMPLS' for_loop / for_loop_remat / split_transpose variants (other implementations of lax.scan itself).
- testIssue804 (jax.pmap over several devices; this suite runs on one CPU device), and the non-scan tests of
  the file (while_loop, fori_loop, cond, switch, associative_scan, map).
"""

from __future__ import annotations

import collections
import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import memjax
from tests.helpers import assert_trees_close, lax_scan, least_bytes

REFERENCE = os.environ.get("MEMJAX_PARITY_REFERENCE", "") not in ("", "0")
PARAMS = [("msm", None), ("msm", 0.2), ("hsm", None), ("hsm", 0.2)]


@pytest.fixture(params=PARAMS, ids=[f"{kind}-{memory}" for kind, memory in PARAMS])
def mscan(request):
    """``memjax.scan`` with one (kind, memory); ``jax.lax.scan`` itself in the self-check run."""
    kind, memory = request.param
    if REFERENCE:
        return lax_scan
    return functools.partial(memjax.scan, memory=memory, kind=kind)


_EXPECTED = {}  # lax.scan's results, computed once per test and shared by its four (kind, memory) cases
_CURRENT = {"key": None, "calls": 0}


@pytest.fixture(autouse=True)
def _reference_key(request):
    """Names the running test apart from its (kind, memory), so that ``parity`` runs lax.scan once per test."""
    callspec = getattr(request.node, "callspec", None)
    params = sorted((k, repr(v)) for k, v in (callspec.params.items() if callspec else ()) if k != "mscan")
    _CURRENT.update(key=(request.node.originalname, tuple(params)), calls=0)
    yield
    _CURRENT.update(key=None, calls=0)


def parity(mscan, program, *args, rtol=None, what="value"):
    """``program(scan, *args)`` with lax.scan (first: a failure there is the test's) and with memjax."""
    slot = (_CURRENT["key"], _CURRENT["calls"], repr(args))
    _CURRENT["calls"] += 1
    if slot not in _EXPECTED or _CURRENT["key"] is None:
        _EXPECTED[slot] = jax.device_get(program(lax_scan, *args))
    expected = _EXPECTED[slot]
    actual = program(mscan, *args)
    assert_trees_close(jax.device_get(actual), expected, rtol=rtol, what=what)
    return actual


def total(tree):
    """A scalar that depends on every inexact leaf, differently for each."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    terms = [
        jnp.sum(jnp.sin(leaf) * (i + 1.5)) for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return functools.reduce(jnp.add, terms)


# ------------------------------------------------------------------------------------------------------------------
# The step of testScanImpl / JVP / Linearize / Grad / Vmap, in our own words: a vector carry, a scalar output, a
# closed-over constant.
# ------------------------------------------------------------------------------------------------------------------

_RNG = np.random.RandomState(0)
W_NP, C_NP, XS_NP = _RNG.randn(5), _RNG.randn(4), _RNG.randn(5, 3)
CONSTS_NP = [_RNG.randn(3) for _ in range(2)]
# Module level, so that lax.scan's cached results and memjax's hold the same class.
Point = collections.namedtuple("Point", ["x", "y"])


def make_step(w):
    def step(c, x):
        assert c.shape == (4,) and x.shape == (3,)
        s = jnp.cos(jnp.sum(jnp.sin(x)) + jnp.dot(jnp.cos(c), w[:4]) + w[4])
        return jnp.sin(c * s) + 0.1 * jnp.mean(x), s

    return step


def data():
    """(w, c, xs) in the default float type (float64 under the x64 fixture)."""
    return jnp.asarray(W_NP), jnp.asarray(C_NP), jnp.asarray(XS_NP)


def jitted(scan, jit_scan, jit_f, f):
    f = jax.jit(f) if jit_f else f
    scan = jax.jit(scan, static_argnums=(0,)) if jit_scan else scan
    return scan, f


SLOW = pytest.mark.slow
JITS = [(False, False), (False, True), (True, False), (True, True)]
JIT_IDS = ["eager", "jit_f", "jit_scan", "jit_both"]
# Under a transformation the jit combinations cost one compilation each: jit_both runs by default, the rest is slow.
JITS_FAST_ONE = [
    pytest.param(*jits, id=name, marks=() if name == "jit_both" else SLOW) for jits, name in zip(JITS, JIT_IDS)
]


# ------------------------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit_scan,jit_f", JITS, ids=JIT_IDS)
def test_scan_impl(mscan, x64, jit_scan, jit_f):
    w, c, xs = data()

    def program(scan):
        scan, f = jitted(scan, jit_scan, jit_f, make_step(w))
        return scan(f, c, xs)

    carry, ys = parity(mscan, program)
    assert carry.dtype == jnp.float64 and ys.shape == (5,)


def test_xs_none_with_length(mscan):
    def program(scan):
        count, ys = scan(lambda c, _: (c + 1, c), 0, None, length=6)
        h, _ = scan(lambda h, _: (h * 0.5 + 1.0, None), jnp.float32(0), length=4)
        return count, ys, h

    count, ys, _ = parity(mscan, program)
    assert int(count) == 6 and np.array_equal(ys, np.arange(6))


def test_scan_reverse_cumsum(mscan):
    x = np.array([3, 1, 4, 1, 5, 9])

    def program(scan, disable_jit):
        def cumsum(reverse):
            return scan(lambda c, v: (c + v, c + v), 0, x, reverse=reverse)[1]

        with jax.disable_jit(disable_jit):
            return cumsum(False), cumsum(True)

    for disable_jit in (False, True):
        forward, backward = parity(mscan, program, disable_jit)
        np.testing.assert_array_equal(forward, np.cumsum(x))
        np.testing.assert_array_equal(backward, np.cumsum(x[::-1])[::-1])


@SLOW
def test_scan_reverse_grads(mscan, x64):
    w, c, xs = data()

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs, reverse=True))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(w, c, xs)

    parity(mscan, program)


@SLOW
@pytest.mark.parametrize("unroll", [2, 3, True])
def test_unroll_values_and_grads(mscan, x64, unroll):
    w, c, xs = data()

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs, unroll=unroll))  # noqa: E731
        return scan(make_step(w), c, xs, unroll=unroll), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(w, c, xs)

    parity(mscan, program)


def test_length_zero_under_jit_and_disable_jit(mscan):
    empty = np.array([], np.float32)

    def program(scan):
        return jax.jit(lambda xs: scan(lambda c, x: (c + x, x * x), jnp.float32(0), xs))(empty)

    carry, ys = parity(mscan, program)
    assert float(carry) == 0.0 and ys.shape == (0,)
    # Without jit lax.scan cannot know the output type of a length-0 scan and refuses; memjax must do as it does.
    with pytest.raises(Exception) as lax_info, jax.disable_jit():
        lax.scan(lambda c, x: (c + x, x), 0.0, empty)
    with pytest.raises(type(lax_info.value)) as info, jax.disable_jit():
        mscan(lambda c, x: (c + x, x), 0.0, empty)
    assert str(lax_info.value) in str(info.value)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32])
def test_weak_int_init(mscan, dtype):
    x = jnp.ones(5, dtype)

    def program(scan):
        return scan(lambda c, v: (c + v, v), 0, x)  # a Python 0 is weakly typed

    carry, ys = parity(mscan, program)
    assert carry.dtype == dtype and int(carry) == 5


@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.bfloat16, marks=SLOW)])
def test_weak_float_init_strict_promotion(mscan, dtype):
    xs = jnp.arange(3, dtype=dtype) + 1

    def program(scan):
        with jax.numpy_dtype_promotion("strict"):
            out = scan(lambda c, x: (c * 0.5 + x, c * x), 0.0, xs)  # a Python 0.0: weakly typed
            grad = jax.grad(lambda xs: total(scan(lambda c, x: (c * 0.5 + x, c * x), 0.0, xs)[1]))(xs)
        return out, grad

    (carry, ys), _ = parity(mscan, program)
    assert carry.dtype == dtype and ys.dtype == dtype


@SLOW
def test_pytree_carry_and_ys(mscan, x64):
    w, c, xs = data()

    def step(carry, x):
        p, extra = carry["p"], carry["extra"]
        s = jnp.tanh(jnp.dot(p.x, w[:4]) + jnp.sum(x) + extra[0])
        new = {"p": Point(jnp.sin(p.x * s) + p.y, p.y * 0.9 + s), "extra": (extra[0] * s, ())}
        return new, {"s": s, "none": None, "pair": (x * s, p.x)}

    init = {"p": Point(c, jnp.float64(0.5)), "extra": (jnp.float64(1.0), ())}

    def program(scan):
        loss = lambda w, init, xs: total(scan(step, init, xs))  # noqa: E731
        return scan(step, init, xs), jax.jit(jax.grad(loss, argnums=(1, 2)))(w, init, xs)

    (carry, ys), _ = parity(mscan, program)
    assert isinstance(carry["p"], Point) and ys["none"] is None


@SLOW
def test_int_and_bool_carries(mscan, x64):
    w, c, xs = data()

    def step(carry, x):
        n, flag, h = carry
        h = jnp.where(flag, jnp.tanh(h + jnp.sum(x) * w[:4]), h * 0.5) * jnp.cos(n.astype(h.dtype))
        return (n + 1, jnp.logical_not(flag), h), (n, flag, h)

    init = (jnp.int32(2), jnp.bool_(True), c)

    def program(scan):
        loss = lambda init, xs: total(scan(step, init, xs))  # noqa: E731
        return (scan(step, init, xs), jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))(init, xs))

    (carry, _), (g_init, _) = parity(mscan, program)
    assert int(carry[0]) == 7 and g_init[0].dtype == jax.dtypes.float0


@SLOW
def test_forwarded_carries_and_xs(mscan, x64):
    """Carries passed through unchanged or permuted and ys that are xs, with constants closed over."""
    consts = [jnp.asarray(a) for a in CONSTS_NP]
    xs = [jnp.arange(4.0) * 0.3, jnp.cos(jnp.arange(4.0))]
    k = sum(jnp.sum(a) for a in consts)

    def step(c, x):
        a, b, d, e = c
        new = (a, jnp.sin(e) * k, d, b)  # a, d forwarded; b and e swap places through the body
        return new, [x[1], jnp.cos(x[0]) * k, 0]

    init = tuple(jnp.float64(v) for v in (0.3, 0.7, -1.1, 2.0))

    def program(scan):
        loss = lambda init, xs: total(scan(step, init, xs))  # noqa: E731
        return scan(step, init, xs), jax.jit(jax.grad(loss, argnums=(0, 1)))(init, xs)

    (final, ys), _ = parity(mscan, program)
    np.testing.assert_array_equal(ys[0], xs[1])


@SLOW
def test_ys_that_are_xs(mscan, x64):
    xs = jnp.arange(5.0)

    def program(scan):
        loss = lambda xs: total(scan(lambda c, x: (c + 1.0, x), 0.0, xs))  # noqa: E731
        return scan(lambda c, x: (c + 1.0, x), 0.0, xs), jax.grad(loss)(xs)

    (_, ys), _ = parity(mscan, program)
    np.testing.assert_array_equal(ys, xs)


# ------------------------------------------------------------------------------------------------------------------
# Reverse mode
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit_scan,jit_f", JITS_FAST_ONE)
def test_scan_grad(mscan, x64, jit_scan, jit_f):
    w, c, xs = data()

    def program(scan):
        scan, f = jitted(scan, jit_scan, jit_f, make_step(w))
        return jax.grad(lambda c, xs: jnp.sum(scan(f, c, xs)[0]) + jnp.sum(scan(f, c, xs)[1] ** 2), argnums=(0, 1))(
            c, xs
        )

    parity(mscan, program, what="grad")


@SLOW
def test_scan_vjp_and_jacrev(mscan, x64):
    w, c, xs = data()
    ct = (jnp.linspace(-1.0, 1.0, 4), jnp.linspace(0.5, 2.0, 5))

    def program(scan):
        fn = lambda w, c, xs: scan(make_step(w), c, xs)  # noqa: E731
        out, pullback = jax.vjp(fn, w, c, xs)
        return out, pullback(ct), jax.jacrev(fn, argnums=(0, 1))(w, c, xs)

    parity(mscan, program)


@SLOW
def test_float32_grads(mscan):
    w, c, xs = (jnp.asarray(a, jnp.float32) for a in (W_NP, C_NP, XS_NP))

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(w, c, xs)

    value, grads = parity(mscan, program, rtol=1e-5)
    assert value.dtype == jnp.float32


@SLOW
def test_grad_of_body_that_takes_a_grad(mscan, x64):
    def final_x(scan, strength):
        energy = lambda conf: jnp.sum(conf * strength) + 0.5 * jnp.sum(conf**2) * strength  # noqa: E731

        def step(carry, _):
            i, x = carry
            return (i + 1, x - 0.1 * jax.grad(energy)(x)), _

        (i, x), _ = scan(step, (0, jnp.array([1.0, 2.0, 3.0])), jnp.zeros((6, 0)))
        return i, x

    def program(scan):
        loss = lambda s: jnp.sum(jnp.sin(1.0 - final_x(scan, s)[1]))  # noqa: E731
        return final_x(scan, 0.5), jax.grad(loss)(0.25)

    (i, _), _ = parity(mscan, program)
    assert int(i) == 6


@SLOW
@pytest.mark.parametrize("typed", [False, True], ids=["raw_key", "typed_key"])
def test_grad_with_prng_key_in_carry(mscan, x64, typed):
    key = jax.random.key(0) if typed else jax.random.PRNGKey(0)

    def step(carry, _):
        c, k = carry
        k, sub = jax.random.split(k)
        return (c * (1.0 + jax.random.uniform(sub)), k), ()

    def program(scan):
        fn = lambda c: scan(step, (c, key), np.ones(3))[0]  # noqa: E731
        (c, k) = fn(0.5)
        return c, jax.random.key_data(k), jax.grad(lambda c: fn(c)[0])(0.5)

    parity(mscan, program)


@SLOW
def test_grad_of_jitted_scan_with_weak_carry(mscan, x64):
    def program(scan):
        @jax.jit
        def run(x):
            (x, _), _ = scan(lambda carry, _: ((2 * carry[0], 0.0), None), (x, 0.0), jnp.arange(3))
            return x

        return run(1.5), jax.grad(run)(0.0)

    value, grad = parity(mscan, program)
    assert float(value) == 12.0 and float(grad) == 8.0


@SLOW
def test_grad_hoisted_consts(mscan, x64):
    A = jnp.arange(4.0).reshape(2, 2)
    B = jnp.arange(4.0).reshape(2, 2) + 1.0

    def program(scan):
        def f(x):
            def body(c, _):
                c1, c2, c3 = c
                return (jnp.dot(A, c1) * 0.3, jnp.dot(B, c2) * 0.2, jnp.dot(jnp.sin(B), c3)), None

            init = (x * jnp.ones(2), x * jnp.ones(2), x * jnp.ones(2))
            (c1, c2, c3), _ = scan(body, init, None, length=3)
            return jnp.sum(c1) + jnp.sum(c2**2) + jnp.sum(jnp.sin(c3))

        return f(1.0), jax.grad(f)(1.0)

    parity(mscan, program)


@SLOW
def test_closure_over_tracers(mscan, x64):
    """The body closes over values traced by an enclosing jit, grad and vmap."""
    _, c, xs = data()

    def program(scan):
        def loss(p, c, xs):
            q = jnp.tanh(p) * 2.0  # computed outside the scan, used inside it

            def step(h, x):
                h = jnp.tanh(p * h + q * jnp.sum(x))
                return h, p * jnp.sum(h)

            return total(scan(step, c, xs))

        g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(0.7, c, xs)
        gv = jax.vmap(jax.grad(loss), in_axes=(0, None, None))(jnp.array([0.3, -0.4]), c, xs)
        return g, gv

    parity(mscan, program)


def _softclip():
    @jax.custom_jvp
    def softclip(x):
        return jnp.tanh(x) * 1.5

    @softclip.defjvp
    def softclip_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return softclip(x), 1.5 * (1.0 - jnp.tanh(x) ** 2) * t * 0.5  # deliberately half the true derivative

    return softclip


def _softclip_step(w):
    """The step of the custom_jvp tests: carry and output pass through ``softclip``."""
    softclip = _softclip()
    return lambda h, x: (softclip(h * w[:4] + jnp.sum(x)), softclip(h[0]))


def _clip_gradient():
    @jax.custom_vjp
    def clip_gradient(x):
        return jnp.sin(x)

    def forward(x):
        return jnp.sin(x), jnp.cos(x)

    def backward(cos_x, g):
        return (jnp.clip(g * cos_x, -0.1, 0.1),)

    clip_gradient.defvjp(forward, backward)
    return clip_gradient


@SLOW
def test_custom_jvp_in_body(mscan, x64):
    w, c, xs = data()

    def program(scan):
        step = _softclip_step(w)
        loss = lambda c, xs: total(scan(step, c, xs))  # noqa: E731
        return scan(step, c, xs), jax.grad(loss, argnums=(0, 1))(c, xs)

    parity(mscan, program)


@SLOW
def test_custom_vjp_in_body(mscan, x64):
    clip_gradient = _clip_gradient()
    w, c, xs = data()

    def program(scan):
        step = lambda h, x: (clip_gradient(h * w[:4] + jnp.sum(x)), jnp.sum(h))  # noqa: E731
        loss = lambda c, xs: total(scan(step, c, xs))  # noqa: E731
        return scan(step, c, xs), jax.jit(jax.grad(loss, argnums=(0, 1)))(c, xs)

    parity(mscan, program)


@SLOW
def test_scan_of_scan(mscan, x64):
    w, c, xs = data()

    def program(scan):
        def outer(h, x):
            inner = lambda g, v: (jnp.tanh(g * w[:4] + v), jnp.sum(g) * v)  # noqa: E731
            h, zs = scan(inner, h, x)  # the inner scan runs over the 3 entries of x
            return h, zs

        loss = lambda w_, c, xs: total(scan(outer, c, xs))  # noqa: E731
        return scan(outer, c, xs), jax.jit(jax.grad(loss, argnums=(1, 2)))(w, c, xs)

    parity(mscan, program)


@SLOW
@pytest.mark.parametrize("policy", ["nothing_saveable", "everything_saveable"])
def test_checkpoint_around_scan(mscan, x64, policy):
    w, c, xs = data()
    policy = getattr(jax.checkpoint_policies, policy)

    def program(scan):
        run = jax.checkpoint(lambda w, c, xs: scan(make_step(w), c, xs), policy=policy)
        loss = lambda w, c, xs: total(run(w, c, xs))  # noqa: E731
        return run(w, c, xs), jax.grad(loss, argnums=(0, 1, 2))(w, c, xs)

    parity(mscan, program)


def test_debug_print_and_callback_under_grad(mscan, x64, capsys):
    calls = []

    def program(scan):
        def step(c, _):
            jax.debug.print("carry = {c}", c=c, ordered=True)
            jax.debug.callback(lambda v: calls.append(float(v)), c)
            return jnp.sin(c) + 1.0, None

        g = lambda x: scan(step, x, length=3)[0]  # noqa: E731
        out = jax.value_and_grad(g)(0.5), jax.jit(jax.grad(g))(0.5)
        jax.effects_barrier()
        return out

    parity(mscan, program)
    assert len(calls) >= 3 + 3 and "carry = " in capsys.readouterr().out


def test_platform_dependent_in_body(mscan, x64):
    def step(c, x):
        return c + lax.platform_dependent(x, cpu=jnp.sin, default=jnp.cos) * c, lax.platform_dependent(
            x, cpu=jnp.sin, default=jnp.cos
        )

    xs = jnp.arange(6.0) * 0.3

    def program(scan):
        loss = lambda c, xs: total(scan(step, c, xs))  # noqa: E731
        return scan(step, 0.5, xs), jax.grad(loss, argnums=(0, 1))(0.5, xs), jax.jit(loss)(0.5, xs)

    (carry, ys), _, _ = parity(mscan, program)
    expected = np.sin(np.asarray(xs)) if jax.default_backend() == "cpu" else np.cos(np.asarray(xs))
    np.testing.assert_allclose(ys, expected, rtol=1e-12)


@SLOW
def test_scan_inside_platform_dependent_grad(mscan, x64):
    x = jnp.arange(6.0) * 0.25

    def program(scan):
        dot = lambda x: jnp.dot(x, x)  # noqa: E731
        by_scan = lambda x: scan(lambda c, v: (c + v * v, None), 0.0, x)[0]  # noqa: E731
        f_cpu_scan = lambda x: jnp.sin(lax.platform_dependent(x, cpu=by_scan, default=dot))  # noqa: E731
        f_default_scan = lambda x: jnp.sin(lax.platform_dependent(x, cpu=dot, default=by_scan))  # noqa: E731
        return [(f(x), jax.grad(f)(x), jax.jit(jax.grad(f))(x)) for f in (f_cpu_scan, f_default_scan)]

    results = parity(mscan, program)
    expected = jax.grad(lambda x: jnp.sin(jnp.dot(x, x)))(x)
    for _, grad, _ in results:
        np.testing.assert_allclose(grad, expected, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# vmap
# ------------------------------------------------------------------------------------------------------------------

IN_AXES = [axes for axes in itertools.product([None, 0, 1], [None, 0, 1, 2]) if axes != (None, None)]


@pytest.mark.parametrize(
    "in_axes",
    [
        pytest.param(axes, id=f"c{axes[0]}-xs{axes[1]}", marks=() if axes in ((0, 1), (None, 2)) else SLOW)
        for axes in IN_AXES
    ],
)
def test_scan_vmap(mscan, x64, in_axes):
    w = jnp.asarray(W_NP)
    c_shape, xs_shape = [4], [5, 3]
    if in_axes[0] is not None:
        c_shape.insert(in_axes[0], 3)
    if in_axes[1] is not None:
        xs_shape.insert(in_axes[1], 3)
    rng = np.random.RandomState(1)
    c, xs = jnp.asarray(rng.randn(*c_shape)), jnp.asarray(rng.randn(*xs_shape))

    def program(scan):
        return jax.vmap(lambda c, xs: scan(make_step(w), c, xs), in_axes)(c, xs)

    parity(mscan, program)


@SLOW
def test_scan_vmap_of_grad(mscan, x64):
    w, c, xs = data()
    batch = jnp.stack([xs, xs * 0.5, -xs])

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2)), in_axes=(None, None, 0)))(w, c, batch)

    parity(mscan, program)


@SLOW
def test_scan_vmap_tuples(mscan, x64):
    def step(c, x):
        (x1, x2), (c1, c2) = x, c
        y = jnp.sum(jnp.cos(x1)) * jnp.sum(c2 * x2)
        return (c1 * jnp.sin(jnp.sum(x1 * x2)), c2 * jnp.cos(jnp.sum(x1))), y

    rng = np.random.RandomState(2)
    xs = (jnp.asarray(rng.randn(3, 4)), jnp.asarray(rng.randn(3, 2, 4)))
    c = (jnp.asarray(rng.randn(4, 2)), jnp.asarray(rng.randn(4)))

    def program(scan):
        fn = jax.vmap(lambda c, xs: scan(step, c, xs), (0, (1, 2)))
        return fn(c, xs), jax.grad(lambda c, xs: total(fn(c, xs)), argnums=(0, 1))(c, xs)

    parity(mscan, program)


def test_scan_vmap_fixpoint(mscan):
    """The carry shifts left each step; only its last entry starts batched."""

    def program(scan):
        def f(last):
            return scan(lambda c, _: ((c[1], c[2], c[3], 0.0), None), (0.0, 1.0, 2.0, last), jnp.zeros(2))

        return jax.vmap(f)(jnp.array([3.0, 4.0, 5.0]))

    (out, _) = parity(mscan, program)
    np.testing.assert_array_equal(out[1], [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(out[0], [2.0, 2.0, 2.0])


def test_vmap_axis_size_in_body(mscan):
    def program(scan):
        f = lambda: scan(lambda _, __: (lax.axis_size("i"), None), 0, None, length=1)[0]  # noqa: E731
        return [jax.vmap(f, axis_name="i", axis_size=n, out_axes=None)() for n in (2, 3)]

    assert [int(v) for v in parity(mscan, program)] == [2, 3]


def test_vmap_collectives_in_body(mscan):
    def program(scan):
        run = lambda state, xs: scan(lambda s, x: (s, lax.psum(s, "i") * x), state, xs)  # noqa: E731
        return jax.vmap(run, axis_name="i")(jnp.ones([2]), jnp.arange(10.0).reshape((2, 5)))

    state, ys = parity(mscan, program)
    np.testing.assert_array_equal(ys, 2 * np.arange(10.0).reshape(2, 5))


def test_length_one_scan_in_cond_under_vmap(mscan):
    def program(scan):
        def f(x, y):
            def g(_, y):
                y, _ = scan(lambda y, _: (y, None), y, None, length=1)
                return y

            return lax.cond(x < 0, g, g, x, y)

        return jax.vmap(f, (0, None), None)(jnp.arange(3.0), 3.0)

    assert float(parity(mscan, program)) == 3.0


# ------------------------------------------------------------------------------------------------------------------
# Forward mode
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit_scan,jit_f", JITS_FAST_ONE)
def test_scan_jvp(mscan, x64, jit_scan, jit_f):
    w, c, xs = data()

    def program(scan):
        scan, f = jitted(scan, jit_scan, jit_f, make_step(w))
        return jax.jvp(lambda c, xs: scan(f, c, xs), (c, xs), (c, xs))

    parity(mscan, program)


@pytest.mark.parametrize("jit_scan,jit_f", JITS_FAST_ONE)
def test_scan_linearize(mscan, x64, jit_scan, jit_f):
    w, c, xs = data()

    def program(scan):
        scan, f = jitted(scan, jit_scan, jit_f, make_step(w))
        out, f_lin = jax.linearize(lambda c, xs: scan(f, c, xs), c, xs)
        return out, f_lin(c, xs), f_lin(c * 0.5, -xs)

    parity(mscan, program)


def test_scan_jacfwd(mscan, x64):
    w, c, xs = data()

    def program(scan):
        return jax.jacfwd(lambda w, c, xs: scan(make_step(w), c, xs), argnums=(0, 1))(w, c, xs)

    parity(mscan, program)


@SLOW
def test_jacfwd_of_body_that_takes_a_grad(mscan, x64):
    def program(scan):
        def loop(val):
            step = lambda x, i: (jax.grad(jnp.cos)(x) + 0.01 * i, i)  # noqa: E731
            return scan(step, val, jnp.arange(6))[0]

        return jax.jit(jax.jacfwd(loop))(0.5)

    parity(mscan, program)


@SLOW
@pytest.mark.parametrize("length", [1, 3])
def test_linearize_cond_in_body(mscan, x64, length):
    """A while loop written as a scan over lax.cond (test_xla_cpu_gpu_loop_cond_bug)."""

    def power(scan, x, n):
        def body(carry, _):
            val, go = carry
            return lax.cond(go, lambda v: (v * x, True), lambda v: (v, False), val), None

        return scan(body, (1.0, True), None, length=n)[0][0]

    def program(scan):
        return jax.linearize(lambda x: power(scan, x, length), 3.0)[1](1.0)

    assert float(parity(mscan, program)) == pytest.approx(length * 3.0 ** (length - 1))


@SLOW
def test_custom_jvp_in_body_forward_mode(mscan, x64):
    w, c, xs = data()

    def program(scan):
        step = _softclip_step(w)
        return jax.jvp(lambda c, xs: scan(step, c, xs), (c, xs), (jnp.ones_like(c), xs))

    parity(mscan, program)


# ------------------------------------------------------------------------------------------------------------------
# Second order
# ------------------------------------------------------------------------------------------------------------------


def _scalar_step(c, a):
    b = jnp.sin(c * jnp.sum(jnp.cos(0.75 * a)))
    c = 0.9 * jnp.cos(0.75 * jnp.sum(jnp.sin(c * a)))
    return c, b


def _scalar_loss(scan, c, xs):
    carry, ys = scan(_scalar_step, c, xs)
    return carry**2 + jnp.sum(jnp.sin(ys))


def test_scan_grad_of_grad_scalar_carry(mscan, x64):
    xs = jnp.arange(6.0).reshape((3, 2)) * 0.2

    def program(scan):
        loss = functools.partial(_scalar_loss, scan)
        return (
            jax.jit(jax.grad(jax.grad(loss)))(1.0, xs),
            jax.jit(jax.grad(lambda c: jnp.sum(jax.grad(loss, 1)(c, xs))))(1.0),
        )

    parity(mscan, program)


@pytest.mark.parametrize("argnums", [(0,), pytest.param((0, 1), marks=SLOW)], ids=["c", "c_xs"])
def test_scan_jacrev_jacrev(mscan, x64, argnums):
    w, c, xs = data()

    def program(scan):
        loss = lambda c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return jax.jit(jax.jacrev(jax.jacrev(loss, argnums=argnums), argnums=argnums))(c, xs)

    parity(mscan, program)


@SLOW
def test_scan_jacfwd_jacfwd(mscan, x64):
    w, c, xs = data()

    def program(scan):
        fn = lambda c: scan(make_step(w), c, xs)  # noqa: E731
        return jax.jit(jax.jacfwd(jax.jacfwd(fn)))(c)

    parity(mscan, program)


@SLOW
def test_scan_hessian_fwd_over_rev(mscan, x64):
    w, c, xs = data()

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return (
            jax.jit(jax.hessian(loss, argnums=(0, 1)))(w, c, xs),
            jax.jit(jax.hessian(functools.partial(_scalar_loss, scan)))(1.0, xs[:, :2] * 0.5),
        )

    parity(mscan, program)


@SLOW
def test_scan_jvp_of_grad(mscan, x64):
    w, c, xs = data()

    def program(scan):
        loss = lambda c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return jax.jit(lambda t: jax.jvp(jax.grad(loss, argnums=(0, 1)), (c, xs), t))((jnp.ones_like(c), xs * 0.1))

    parity(mscan, program)


# ------------------------------------------------------------------------------------------------------------------
# The RNN of testScanRnn
# ------------------------------------------------------------------------------------------------------------------

N_IN, N_HID, N_OUT, RNN_T = 3, 2, 1, 4
_R = np.random.RandomState(3)
RNN_NP = (_R.randn(N_HID, N_HID + N_IN), _R.randn(N_OUT, N_HID + N_IN), _R.randn(RNN_T, N_IN), _R.randn(RNN_T, N_OUT))


def rnn_data():
    w_trans, w_out, inputs, targets = (jnp.asarray(a) for a in RNN_NP)
    return (w_trans, w_out), inputs, targets


def rnn_loss(scan, params, inputs, targets):
    def step(state, x):
        w_trans, w_out = params
        stacked = jnp.concatenate([state, x])
        return jnp.tanh(w_trans @ stacked), jnp.tanh(w_out @ stacked)

    _, predictions = scan(step, jnp.zeros(N_HID, inputs.dtype), inputs)
    return jnp.sum((predictions - targets) ** 2)


@SLOW
def test_rnn_value_and_grad(mscan, x64):
    params, inputs, targets = rnn_data()

    def program(scan):
        loss = jax.jit(functools.partial(rnn_loss, scan))
        return loss(params, inputs, targets), jax.grad(loss, argnums=(0, 1, 2))(params, inputs, targets)

    parity(mscan, program)


@SLOW
def test_rnn_jvp_and_linearize(mscan, x64):
    params, inputs, targets = rnn_data()

    def program(scan):
        loss = jax.jit(functools.partial(rnn_loss, scan))
        args = (params, inputs, targets)
        _, linear = jax.linearize(loss, *args)
        return jax.jvp(loss, args, args), linear(*args)

    parity(mscan, program)


def test_rnn_hessian(mscan, x64):
    params, inputs, targets = rnn_data()

    def program(scan):
        return jax.jit(jax.hessian(functools.partial(rnn_loss, scan), argnums=(0, 1)))(params, inputs, targets)

    parity(mscan, program, rtol=1e-10)


@SLOW
def test_rnn_grad_of_grad(mscan, x64):
    params, inputs, targets = rnn_data()

    def program(scan):
        loss = functools.partial(rnn_loss, scan)
        return jax.jit(jax.jacrev(jax.grad(loss)))(params, inputs, targets)

    parity(mscan, program)


@SLOW
def test_rnn_batched_loss(mscan, x64):
    params, _, _ = rnn_data()
    rng = np.random.RandomState(4)
    inputs, targets = jnp.asarray(rng.randn(3, RNN_T, N_IN)), jnp.asarray(rng.randn(3, RNN_T, N_OUT))

    def program(scan):
        loss = jax.jit(functools.partial(rnn_loss, scan))
        batched = jax.vmap(lambda x, y: loss(params, x, y))(inputs, targets)
        one_by_one = jnp.stack([loss(params, x, y) for x, y in zip(inputs, targets)])
        return batched, one_by_one

    batched, one_by_one = parity(mscan, program)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# Mistakes: the same exception type as lax.scan, and lax.scan's message inside memjax's
# ------------------------------------------------------------------------------------------------------------------


def _expected_text(error: Exception) -> list[str]:
    """What memjax's message must contain: lax.scan's message, less the lines naming where tracing happened (a
    ConcretizationTypeError names the traced function and line, which differ between the two calls)."""
    if isinstance(error, jax.errors.ConcretizationTypeError):
        return [line for line in str(error).splitlines()[:2]]
    return [str(error)]


def assert_same_error(mscan, call):
    """``call(scan)`` must raise under lax.scan; memjax must raise an instance of that type whose message
    contains lax.scan's."""
    try:
        call(lax_scan)
    except Exception as error:  # noqa: BLE001 - whatever lax.scan raises is the reference
        lax_error = error
    else:
        raise AssertionError("the test's mistake does not make lax.scan raise")
    try:
        call(mscan)
    except Exception as error:  # noqa: BLE001
        ours = error
    else:
        raise AssertionError(f"memjax.scan raised nothing; lax.scan raised {type(lax_error).__name__}: {lax_error}")
    assert isinstance(ours, type(lax_error)), (
        f"memjax.scan raised {type(ours).__name__}: {ours}\nlax.scan raised {type(lax_error).__name__}: {lax_error}"
    )
    for text in _expected_text(lax_error):
        assert text in str(ours), f"lax.scan's message\n  {text!r}\nis not in memjax.scan's\n  {str(ours)!r}"


def test_error_not_callable(mscan):
    assert_same_error(mscan, lambda scan: scan(42, 0, 1))


def test_error_body_output_not_pair(mscan):
    assert_same_error(mscan, lambda scan: scan(lambda c, x: np.float32(0.0), 0.0, jnp.arange(5.0)))


CARRY_STRUCTURE_MISTAKES = {
    "tuple_lengths": lambda scan: scan(lambda c, x: ((0.0, 0.0, 0.0), x), (1.0, (2.0, 3.0)), jnp.arange(5.0)),
    "one_element_less": lambda scan: scan(
        lambda c, _: ((c[0].astype("float32"),), None), (jnp.array(0, "int32"),) * 2, None, length=1
    ),
    "list_for_tuple": lambda scan: scan(
        lambda c, _: ([c[0].astype("float32")] * 2, None), (jnp.array(0, "int32"),) * 2, None, length=1
    ),
    "dict_children": lambda scan: scan(
        lambda c, _: ({"a": c["a"], "b": c["a"]}, None), {"a": jnp.array(0, "int32")}, None, length=1
    ),
    "nested_dict_children": lambda scan: scan(
        lambda c, _: (({"a": c[0]["a"], "b": c[0]["a"]},) * 2, None),
        ({"a": jnp.array(0, "int32")},) * 2,
        None,
        length=1,
    ),
    "dict_keys": lambda scan: scan(lambda c, _: ({"T": c["t"]}, None), {"t": jnp.array([1.0])}, None, length=1),
}


@pytest.mark.parametrize("mistake", list(CARRY_STRUCTURE_MISTAKES))
def test_error_carry_structure(mscan, mistake):
    assert_same_error(mscan, CARRY_STRUCTURE_MISTAKES[mistake])


CARRY_TYPE_MISTAKES = {
    "dtype": lambda scan: scan(lambda c, _: (c.astype("float32"), None), jnp.array(0, "int32"), None, length=1),
    "dtype_of_component": lambda scan: scan(
        lambda c, _: ((c[0], c[1].astype("float32")), None), (jnp.array(0, "int32"),) * 2, None, length=1
    ),
    "two_components": lambda scan: scan(
        lambda c, _: ((c[0].astype("float32"), c[1].astype("float32").reshape(1, 1), c[2]), None),
        (jnp.array(0, "int32"),) * 3,
        None,
        length=1,
    ),
    "shape": lambda scan: scan(lambda c, x: (jnp.stack([c, c]), x), jnp.float32(0), jnp.arange(3.0)),
}


@pytest.mark.parametrize("mistake", list(CARRY_TYPE_MISTAKES))
def test_error_carry_type(mscan, mistake):
    assert_same_error(mscan, CARRY_TYPE_MISTAKES[mistake])


def test_error_scalar_leaf_in_xs(mscan):
    p0 = Point(x=jnp.array(1), y=jnp.array(2))
    assert_same_error(mscan, lambda scan: scan(lambda p, i: (Point(p.x + 1, p.y + 1), i), p0, list(range(5))))
    assert_same_error(mscan, lambda scan: scan(lambda c, x: (c, x), 0.0, (jnp.arange(3.0), 1.0)))


def test_error_xs_lengths_differ(mscan):
    assert_same_error(mscan, lambda scan: scan(lambda c, x: (c, x), 0.0, (jnp.arange(3.0), jnp.arange(4.0))))


def test_error_length_disagrees(mscan):
    assert_same_error(mscan, lambda scan: scan(lambda c, x: (c, x), 0.0, jnp.arange(3.0), length=4))


def test_error_length_traced_under_jit(mscan):
    assert_same_error(mscan, lambda scan: jax.jit(lambda n, x: scan(lambda c, z: (c, z), x, (), n))(3, 1.0))


def test_error_unroll_traced_under_jit(mscan):
    assert_same_error(mscan, lambda scan: jax.jit(lambda n, x: scan(lambda c, z: (c, z), x, (), 10, unroll=n))(3, 1.0))


def test_error_no_xs_no_length(mscan):
    assert_same_error(mscan, lambda scan: scan(lambda c, x: (c, x), 0.0))


def test_error_negative_unroll(mscan):
    assert_same_error(mscan, lambda scan: scan(lambda c, x: (c, x), 0, jnp.arange(5), unroll=-1))


# ------------------------------------------------------------------------------------------------------------------
# Budgets: short sequences work with every budget; a byte budget below the least names it
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1])
def test_lengths_zero_and_one(mscan, x64, length):
    w, c, xs = data()
    xs = xs[:length]

    def program(scan):
        loss = lambda w, c, xs: total(scan(make_step(w), c, xs))  # noqa: E731
        return (
            scan(make_step(w), c, xs),
            jax.grad(loss, argnums=(0, 1, 2))(w, c, xs),
            jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(w, c, xs),
            scan(lambda h, _: (h * 2.0, h), c, None, length=length),
        )

    (carry, ys), *_ = parity(mscan, program)
    assert ys.shape == (length,)
    if length == 0:
        np.testing.assert_array_equal(carry, c)


RELATIVE_BUDGETS = [
    0.2,
    0.01,
    "5%",
    pytest.param(1.0, marks=SLOW),
    pytest.param("1%", marks=SLOW),
    pytest.param("50%", marks=SLOW),
]


@pytest.mark.parametrize("kind", ["msm", "hsm"])
@pytest.mark.parametrize("memory", RELATIVE_BUDGETS, ids=str)
def test_relative_budgets_never_raise_on_short_sequences(kind, memory, x64):
    if REFERENCE:
        pytest.skip("memjax-only: budgets")
    w, c, xs = data()
    for length in range(6):
        loss = lambda w, c, xs: total(memjax.scan(make_step(w), c, xs, memory=memory, kind=kind))  # noqa: E731
        memjax.plan_scan(make_step(w), c, xs[:length], memory=memory, kind=kind)
        jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2)), w, c, xs[:length])  # plans under tracing, compiles nothing
    got = jax.grad(loss, argnums=(0, 1, 2))(w, c, xs[:3])
    expected = jax.grad(lambda w, c, xs: total(lax.scan(make_step(w), c, xs)), argnums=(0, 1, 2))(w, c, xs[:3])
    assert_trees_close(got, expected, what="grad")


@pytest.mark.parametrize("kind", ["msm", "hsm"])
def test_bytes_budget_below_the_least_names_it(kind, x64):
    if REFERENCE:
        pytest.skip("memjax-only: budgets")
    w, c, xs = data()
    for length in (2, 3, 5):
        least = least_bytes(make_step(w), c, xs[:length], kind=kind)  # asserts the message names it
        with pytest.raises(ValueError, match=rf"\b{least}\b") as info:
            memjax.scan(make_step(w), c, xs[:length], memory=least - 1, kind=kind)
        assert "bytes" in str(info.value)
        memjax.scan(make_step(w), c, xs[:length], memory=least, kind=kind)
        loss = lambda w, c, xs: total(memjax.scan(make_step(w), c, xs, memory=1, kind=kind))  # noqa: E731
        with pytest.raises(ValueError, match=r"\d+ bytes"):
            jax.grad(loss, argnums=(0, 1, 2))(w, c, xs[:length])
