"""memjax.scan on the tests' LSTM must show: lax.scan's values and gradients for every kind and budget (the
oracle: lax.scan on the same program), the planned number of step evaluations, XLA memory that falls with the
budget, checkpoint policies, explain's report, and the transformations users combine it with. Dtypes, bad input,
long sequences and the program's size, determinism and several devices have files of their own.

Cost note: every case is dominated by one XLA compilation (about 2 s on the shared CI cores), so models are tiny
and each compiled result is cached and shared between the tests that check it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from tests.helpers import (
    KEY,
    NIN,
    B,
    Counter,
    H,
    assert_trees_close,
    counted,
    gru_init,
    gru_params,
    gru_step,
    lax_scan,
    least_bytes,
    least_bytes_traced,
    lstm_init,
    lstm_params,
    lstm_step,
    resolve,
    scalar_of,
    scan_loss,
    tiny_lstm,
    value_and_grads,
)

T = 16
P, INIT, XS = tiny_lstm(T)


def lstm_f(params=P):
    return functools.partial(lstm_step, params)


# ------------------------------------------------------------------------------------------------------------------
# LSTM: every kind, budgets from the least to store-all in every accepted notation
# ------------------------------------------------------------------------------------------------------------------

# store_all of this LSTM is 64 + 15 * 472 = 7144 bytes: "3KiB" and "5%" (357 bytes) lie between least and store_all
LSTM_CASES = [
    ("msm", "least"),
    ("msm", "3KiB"),
    ("msm", "5%"),
    ("msm", 0.3),
    ("msm", 1.0),
    ("msm", None),
    ("hsm", "least"),
    ("hsm", 0.5),
    ("ism", "least"),
    ("ism", 0.5),
    ("chen", "least"),
    ("recompute", "least"),
    ("store_all", 1.0),
    ("store_all", None),
    ("auto", 0.3),  # scan's extra kind: the candidate with the least predicted time
]
assert {kind for kind, _ in LSTM_CASES} >= set(memjax.planning.KINDS)


@functools.cache
def lstm_reference():
    """lax.scan's values and gradients, and how many times its gradient evaluates the step."""
    counter = Counter()
    out, grads = value_and_grads(lax_scan, counted(lstm_step, counter), P, INIT, XS)
    jax.effects_barrier()
    return out, grads, counter.count


@functools.cache
def lstm_memjax(kind, memory):
    """memjax's values and gradients, the step evaluations of one value_and_grad, and the plan made for the very
    step function (and traced parameters) being differentiated."""
    memory = resolve(memory, kind, lstm_step, P, INIT, XS)
    counter = Counter()
    step = counted(lstm_step, counter)
    plans = []

    def loss(params, init, xs):
        f = functools.partial(step, params)
        plans.append(memjax.plan_scan(f, init, xs, memory=memory, kind=kind))
        carry, ys = memjax.scan(f, init, xs, memory=memory, kind=kind)
        return scalar_of((carry, ys)), (carry, ys)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, out), grads = fn(P, INIT, XS)
    jax.block_until_ready(grads)
    jax.effects_barrier()
    assert len(plans) == 1
    return jax.device_get(out), jax.device_get(grads), counter.count, plans[0]


@pytest.mark.parametrize("kind,memory", LSTM_CASES)
def test_lstm_values_and_gradients_match_lax_scan(kind, memory):
    out, grads, _, _ = lstm_memjax(kind, memory)
    ref_out, ref_grads, _ = lstm_reference()
    assert_trees_close(out, ref_out, rtol=1e-5, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-5, what="grad (params, init, xs)")


@pytest.mark.parametrize("kind,memory", LSTM_CASES)
def test_step_evaluations_equal_planned_forward_count(kind, memory):
    _, _, count, plan = lstm_memjax(kind, memory)
    assert plan.length == T and (plan.kind == kind or kind == "auto" and plan.kind in memjax.planning.KINDS)
    assert count == plan.forward_count, (
        f"one value_and_grad evaluated the step {count} times; plan_scan predicted {plan.forward_count}"
    )
    if kind not in ("store_all",):
        assert plan.policy is not None and plan.forward_count == plan.policy.cost


def test_lax_scan_gradient_evaluates_each_step_once():
    """Sanity check of the counting method itself."""
    assert lstm_reference()[2] == T


@pytest.mark.parametrize("kind,memory", [("msm", 0.3), ("chen", 1.0)])
def test_plan_with_concrete_arguments_is_the_plan_used_under_grad(kind, memory):
    """explain()/plan_scan() called outside jax.grad must measure what scan uses inside it."""
    concrete = memjax.plan_scan(lstm_f(), INIT, XS, memory=memory, kind=kind)
    traced = []

    def loss(params):
        traced.append(memjax.plan_scan(functools.partial(lstm_step, params), INIT, XS, memory=memory, kind=kind))
        return jnp.zeros(())

    jax.grad(loss)(P)
    assert (
        concrete.sizes.residual_bytes,
        concrete.sizes.internal_bytes,
        concrete.budget_bytes,
        concrete.forward_count,
    ) == (
        traced[0].sizes.residual_bytes,
        traced[0].sizes.internal_bytes,
        traced[0].budget_bytes,
        traced[0].forward_count,
    )
    assert least_bytes(lstm_f(), INIT, XS, kind=kind) == least_bytes_traced(lstm_step, P, INIT, XS, kind=kind)


def test_least_budget_is_exact_and_lies_below_store_all():
    f = lstm_f()
    store_all = memjax.plan_scan(f, INIT, XS, memory=1.0).store_all_bytes
    for kind in ("msm", "hsm", "ism", "recompute", "chen"):
        least = least_bytes(f, INIT, XS, kind=kind)
        assert 0 < least < store_all, (kind, least, store_all)
        plan = memjax.plan_scan(f, INIT, XS, memory=least, kind=kind)
        assert plan.budget_bytes == least and plan.stored_bytes <= least
    assert least_bytes(f, INIT, XS, kind="store_all") == store_all


@pytest.mark.parametrize("kind", ["msm", "hsm", "ism", "chen"])
def test_forward_count_never_rises_with_the_budget(kind):
    f = lstm_f()
    least = least_bytes(f, INIT, XS, kind=kind)
    store_all = memjax.plan_scan(f, INIT, XS, memory=1.0, kind=kind).store_all_bytes
    budgets = np.unique(np.linspace(least, store_all, 12).astype(int))
    counts = []
    for budget in budgets:
        plan = memjax.plan_scan(f, INIT, XS, memory=int(budget), kind=kind)
        assert plan.stored_bytes <= plan.budget_bytes == int(budget)
        counts.append(plan.forward_count)
    assert all(a >= b for a, b in zip(counts, counts[1:])), dict(zip(budgets.tolist(), counts))
    assert counts[0] > T  # the least budget recomputes
    if kind in ("msm", "ism"):
        assert counts[-1] == T  # everything fits: nothing recomputed


def test_budget_notations_resolve_to_bytes():
    f = lstm_f()
    store_all = memjax.plan_scan(f, INIT, XS, memory=1.0).store_all_bytes
    assert memjax.plan_scan(f, INIT, XS, memory=2000).budget_bytes == 2000
    assert memjax.plan_scan(f, INIT, XS, memory="3KiB").budget_bytes == 3072
    assert memjax.plan_scan(f, INIT, XS, memory="5%").budget_bytes == int(0.05 * store_all)
    assert memjax.plan_scan(f, INIT, XS, memory=0.3).budget_bytes == int(0.3 * store_all)
    assert memjax.plan_scan(f, INIT, XS, memory=1.0).budget_bytes == store_all


# ------------------------------------------------------------------------------------------------------------------
# Pytrees, integer carries, xs=None, reverse, unroll, None in ys, lengths 0, 1, 2
# ------------------------------------------------------------------------------------------------------------------


def test_gru_dict_carry_with_int_counter():
    p = gru_params(jax.random.fold_in(KEY, 4), NIN, H)
    init = gru_init(B, H, key=jax.random.fold_in(KEY, 5))
    memory = least_bytes_traced(gru_step, p, init, XS) + 300
    out, grads = value_and_grads(memjax.scan, gru_step, p, init, XS, memory=memory)
    ref_out, ref_grads = value_and_grads(lax_scan, gru_step, p, init, XS)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    assert int(out[0]["n"]) == 3 + T
    np.testing.assert_array_equal(out[1]["n"], 3 + np.arange(T))
    assert grads[1]["n"].dtype == jax.dtypes.float0 and grads[1]["n"].shape == ()


def autonomous_step(params, carry, x):
    """An LSTM fed with its own state: no xs."""
    assert x is None
    return lstm_step(params, carry, jnp.tanh(carry[0][:, :NIN]) + 0.5)


@pytest.mark.parametrize("kind", ["msm"])
def test_xs_none_with_length(kind):
    memory = resolve("least", kind, autonomous_step, P, INIT, None, T)
    out, grads = value_and_grads(memjax.scan, autonomous_step, P, INIT, None, length=T, memory=memory, kind=kind)
    ref_out, ref_grads = value_and_grads(lax_scan, autonomous_step, P, INIT, None, length=T)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    assert out[1].shape == (T, B, H)


@pytest.mark.parametrize("kind,memory", [("msm", "least"), ("ism", 0.5)])
def test_reverse(kind, memory):
    memory = resolve(memory, kind, lstm_step, P, INIT, XS)
    out, grads = value_and_grads(memjax.scan, lstm_step, P, INIT, XS, reverse=True, memory=memory, kind=kind)
    ref_out, ref_grads = value_and_grads(lax_scan, lstm_step, P, INIT, XS, reverse=True)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    # and it really is reversed: not the forward scan's result
    assert not np.allclose(out[0][0], lstm_reference()[0][0][0])


@pytest.mark.parametrize("unroll", [2, True])
def test_unroll(unroll):
    out, grads = value_and_grads(memjax.scan, lstm_step, P, INIT, XS, unroll=unroll, memory=0.3)
    ref_out, ref_grads = value_and_grads(lax_scan, lstm_step, P, INIT, XS, unroll=unroll)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")


def step_with_none_outputs(params, carry, x):
    (h, c), _ = lstm_step(params, carry, x)
    return (h, c), {"h": h, "nothing": None, "pair": (None, jnp.sum(c, axis=-1)), "empty": ()}


def test_ys_pytree_with_none_leaves():
    out, grads = value_and_grads(memjax.scan, step_with_none_outputs, P, INIT, XS, memory=0.3)
    ref_out, ref_grads = value_and_grads(lax_scan, step_with_none_outputs, P, INIT, XS)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    assert out[1]["nothing"] is None and out[1]["pair"][0] is None and out[1]["pair"][1].shape == (T, B)


@pytest.mark.parametrize(
    "length,kind,memory",
    [
        (0, "msm", None),
        (0, "msm", 1.0),
        (0, "hsm", "least"),
        (1, "msm", None),
        (1, "msm", 1.0),
        (1, "hsm", "least"),
        (2, "msm", "least"),
        (2, "hsm", "least"),
    ],
)
def test_short_lengths(length, kind, memory):
    xs = XS[:length]
    memory = resolve(memory, kind, lstm_step, P, INIT, xs)
    out, grads = value_and_grads(memjax.scan, lstm_step, P, INIT, xs, memory=memory, kind=kind)
    ref_out, ref_grads = value_and_grads(lax_scan, lstm_step, P, INIT, xs)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")
    assert out[1].shape == (length, B, H) and grads[2].shape == (length, B, NIN)


@pytest.mark.parametrize("length", [0, 1])
def test_short_lengths_without_xs(length):
    out, grads = value_and_grads(memjax.scan, autonomous_step, P, INIT, None, length=length, memory=1.0)
    ref_out, ref_grads = value_and_grads(lax_scan, autonomous_step, P, INIT, None, length=length)
    assert_trees_close(out, ref_out, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, what="grad")


# ------------------------------------------------------------------------------------------------------------------
# XLA memory and program size
# ------------------------------------------------------------------------------------------------------------------

MEM_B, MEM_H, MEM_T = 4, 32, 1000
MEM_BUDGETS = (0.5, 0.2, 0.05, 0.02)


@functools.cache
def _memory_model():
    p = lstm_params(jax.random.fold_in(KEY, 7), MEM_H, MEM_H)
    xs = jax.random.normal(jax.random.fold_in(KEY, 8), (MEM_T, MEM_B, MEM_H))
    return p, lstm_init(MEM_B, MEM_H), xs


def _memory_loss(params, init, xs, memory):
    carry, ys = memjax.scan(functools.partial(lstm_step, params), init, xs, memory=memory)
    return jnp.sum(ys**2) + jnp.sum(carry[1])


@functools.cache
def compiled_temp_bytes(memory):
    p, init, xs = _memory_model()
    compiled = jax.jit(jax.grad(_memory_loss), static_argnums=3).lower(p, init, xs, memory).compile()
    explanation = memjax.explain(functools.partial(lstm_step, p), init, xs, memory=memory, verbose=False)
    return compiled.memory_analysis().temp_size_in_bytes, explanation


def test_xla_temp_memory_falls_with_the_budget():
    temps = [compiled_temp_bytes(m)[0] for m in MEM_BUDGETS]
    assert all(a > b for a, b in zip(temps, temps[1:])), dict(zip(MEM_BUDGETS, temps))


def _check_temp_bound(memory, temp, explanation):
    bound = 1.1 * (explanation.budget_bytes + explanation.working_bytes)
    assert temp <= bound, (
        f"memory={memory}: XLA temp {temp} bytes > 1.1 * (budget {explanation.budget_bytes} + working "
        f"{explanation.working_bytes}) = {bound:.0f} (ratio {temp / (bound / 1.1):.4f})"
    )


@pytest.mark.parametrize("memory", MEM_BUDGETS)
def test_xla_temp_memory_within_budget_plus_working_set(memory):
    """Against explain() called with the same (concrete) arguments, as a user would call it."""
    _check_temp_bound(memory, *compiled_temp_bytes(memory))


# ------------------------------------------------------------------------------------------------------------------
# checkpoint_policy: internal states that hold only what a jax.checkpoint policy saves
# ------------------------------------------------------------------------------------------------------------------

GATES = jax.checkpoint_policies.save_only_these_names("gates")  # lstm_step names its gate pre-activations


@pytest.mark.parametrize("kind,memory", [("msm", 0.3), ("hsm", 0.5), ("store_all", None), ("auto", 1.0)])
def test_checkpoint_policy_gradients_match_lax_scan(kind, memory):
    out, grads = value_and_grads(memjax.scan, lstm_step, P, INIT, XS, memory=memory, kind=kind, checkpoint_policy=GATES)
    ref_out, ref_grads, _ = lstm_reference()
    assert_trees_close(out, ref_out, rtol=1e-5, what="(carry, ys)")
    assert_trees_close(grads, ref_grads, rtol=1e-5, what="grad (params, init, xs)")


def test_checkpoint_policy_shrinks_the_internal_state():
    f = functools.partial(lstm_step, P)
    full = memjax.plan_scan(f, INIT, XS, memory=0.3)
    gates = memjax.plan_scan(f, INIT, XS, memory=0.3, checkpoint_policy=GATES)
    assert gates.sizes.internal_bytes < full.sizes.internal_bytes
    assert gates.store_all_bytes < full.store_all_bytes


def test_residuals_that_are_the_steps_input_are_read_back_not_stored():
    """The LSTM keeps x for its input weights' gradient: memjax reads it back from xs instead of storing it."""
    sizes = memjax.plan_scan(lstm_f(), INIT, XS, memory=0.3).sizes
    nbytes = [int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in sizes.residual_avals]
    forwarded = [n for n, j in zip(nbytes, sizes.from_x) if j >= 0]
    assert forwarded == [XS[0].nbytes]
    assert sizes.residual_bytes == sum(n for n, v in zip(nbytes, sizes.varies) if v) - XS[0].nbytes


def _store_all_temp_bytes(checkpoint_policy):
    p, init, xs = _memory_model()

    def loss(params):
        carry, ys = memjax.scan(
            functools.partial(lstm_step, params), init, xs, kind="store_all", checkpoint_policy=checkpoint_policy
        )
        return jnp.sum(ys**2)

    return jax.jit(jax.grad(loss)).lower(p).compile().memory_analysis().temp_size_in_bytes


def test_store_all_keeps_only_what_the_checkpoint_policy_saves():
    """kind="store_all" runs lax.scan; with a policy it must store what the plan measured, not every residual."""
    p, init, xs = _memory_model()
    plan = memjax.plan_scan(functools.partial(lstm_step, p), init, xs, kind="store_all", checkpoint_policy=GATES)
    with_policy, without = _store_all_temp_bytes(GATES), _store_all_temp_bytes(None)
    assert with_policy < 0.8 * without, (with_policy, without)
    assert with_policy <= 1.1 * plan.store_all_bytes + 2 * xs.nbytes, (with_policy, plan.store_all_bytes)


def test_auto_considers_store_all_when_the_budget_allows_it():
    f = functools.partial(lstm_step, P)
    roomy = memjax.plan_scan(f, INIT, XS, memory=1.0, kind="auto", checkpoint_policy=GATES)
    tight = memjax.plan_scan(f, INIT, XS, memory=0.3, kind="auto", checkpoint_policy=GATES)
    assert "store_all" in [kind for kind, _, _ in roomy.predictions]
    assert "store_all" not in [kind for kind, _, _ in tight.predictions]


# ------------------------------------------------------------------------------------------------------------------
# Transformations: jit, vmap, forward mode, linearize, second order in every combination
# ------------------------------------------------------------------------------------------------------------------


def _loss(scan_fn, params, init, xs, **kwargs):
    return scan_loss(scan_fn, lstm_step, params, init, xs, **kwargs)[0]


def test_jit_of_scan_values():
    out = jax.jit(lambda p, i, x: memjax.scan(functools.partial(lstm_step, p), i, x, memory=0.3))(P, INIT, XS)
    assert_trees_close(jax.device_get(out), lstm_reference()[0], what="(carry, ys)")


def test_vmap_over_a_batch_of_sequences():
    xsb = jax.random.normal(jax.random.fold_in(KEY, 10), (3, T, B, NIN))

    def run(scan_fn, **kw):
        fn = jax.value_and_grad(lambda p, xs: _loss(scan_fn, p, INIT, xs, **kw))
        return jax.device_get(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(P, xsb))

    assert_trees_close(run(memjax.scan, memory=0.3, kind="msm"), run(lax_scan), what="vmap(value_and_grad)")


def test_vmap_over_parameters():
    pb = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.5 * a, -a]), P)

    def run(scan_fn, **kw):
        fn = jax.value_and_grad(lambda p, init: _loss(scan_fn, p, init, XS, **kw), argnums=(0, 1))
        return jax.device_get(jax.jit(jax.vmap(fn, in_axes=(0, None)))(pb, INIT))

    least = least_bytes_traced(lstm_step, P, INIT, XS, kind="hsm")
    assert_trees_close(run(memjax.scan, memory=least, kind="hsm"), run(lax_scan), what="vmap(value_and_grad)")


def test_hessian_vector_product_forward_over_reverse():
    v = jax.tree_util.tree_map(lambda a: jnp.cos(3 * a), P)

    def hvp(scan_fn, **kw):
        grad = jax.grad(lambda p: _loss(scan_fn, p, INIT, XS, **kw))
        return jax.device_get(jax.jit(lambda p, v: jax.jvp(grad, (p,), (v,)))(P, v))

    assert_trees_close(hvp(memjax.scan, memory=0.3), hvp(lax_scan), what="(grad, hvp)")


@pytest.mark.parametrize("kind", ["msm", "hsm"])
def test_forward_mode_matches_lax_scan(kind):
    v = jax.tree_util.tree_map(lambda a: jnp.cos(3 * a), P)

    def forward(scan_fn, **kw):
        loss = lambda p: _loss(scan_fn, p, INIT, XS, **kw)  # noqa: E731
        value, tangent = jax.jit(lambda p, v: jax.jvp(loss, (p,), (v,)))(P, v)
        _, linear = jax.linearize(loss, P)
        return jax.device_get((value, tangent, linear(v)))

    assert_trees_close(forward(memjax.scan, memory=0.3, kind=kind), forward(lax_scan), what="(value, jvp, linearize)")


@pytest.mark.parametrize("kind", ["msm", "hsm"])
def test_reverse_over_reverse_matches_lax_scan(kind):
    def grad_norm(scan_fn, **kw):
        grad = jax.grad(lambda q: _loss(scan_fn, q, INIT, XS, **kw))
        return lambda p: sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grad(p)))

    ours = jax.device_get(jax.jit(jax.grad(grad_norm(memjax.scan, memory=0.3, kind=kind)))(P))
    assert_trees_close(
        ours,
        jax.device_get(jax.jit(jax.grad(grad_norm(lax_scan)))(P)),
        rtol=1e-4,
        what="grad of the squared gradient norm",
    )


@pytest.mark.parametrize("kind,memory", [("msm", None), ("msm", 0.2), ("hsm", 0.2)])
def test_hessian_of_a_small_rnn_equals_lax_scans_in_float64(kind, memory, x64):
    w = jnp.array([[0.5, -0.3, 0.1], [0.2, 0.9, -0.4], [0.3, 0.1, 0.7]])
    xs = jnp.sin(jnp.arange(36.0).reshape(12, 3))

    def loss(scan_fn, w, **kw):
        def step(h, x):
            h = jnp.tanh(h @ w + x)
            return h, jnp.sum(h**3)

        h, ys = scan_fn(step, jnp.full(3, 0.1), xs, **kw)
        return jnp.sum(ys) + jnp.sum(h**2)

    ours = jax.hessian(lambda w: loss(memjax.scan, w, memory=memory, kind=kind))(w)
    reference = jax.hessian(lambda w: loss(lax_scan, w))(w)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------------------------
# explain
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,memory",
    [
        ("msm", "least"),
        ("msm", 0.3),
        ("msm", None),
        ("hsm", 0.5),
        ("ism", "2KiB"),
        ("chen", 1.0),
        ("recompute", "least"),
        ("store_all", None),
    ],
)
def test_explain_is_consistent_with_the_plan(kind, memory, capsys):
    if memory == "least":
        memory = least_bytes(lstm_f(), INIT, XS, kind=kind)
    e = memjax.explain(lstm_f(), INIT, XS, memory=memory, kind=kind, verbose=False)
    assert capsys.readouterr().out == ""
    plan = memjax.plan_scan(lstm_f(), INIT, XS, memory=memory, kind=kind)
    assert isinstance(e, memjax.Explanation)
    assert e.budget_bytes == plan.budget_bytes
    assert 0 < e.stored_bytes <= e.budget_bytes
    assert e.stored_bytes <= e.store_all_bytes or kind == "store_all"
    assert e.store_all_bytes == plan.store_all_bytes
    assert e.forwards_per_step == pytest.approx(plan.forward_count / T, rel=1e-12)
    assert e.forwards_per_step >= 1
    assert e.carry_bytes == 2 * B * H * 4
    assert e.alpha == pytest.approx(e.internal_bytes / e.carry_bytes)
    assert e.working_bytes > 0
    assert e.plan.forward_count == plan.forward_count
    text = str(e)
    assert "policy" in text
    memjax.explain(lstm_f(), INIT, XS, memory=memory, kind=kind, verbose=True)
    assert capsys.readouterr().out.strip() == text.strip()


def test_explain_says_why_a_policy_is_not_known_optimal():
    """The default budget's MSM policy comes without a table (memjax.planning.two_forward_policy): the report
    says so and gives the lower bound, instead of naming the long-sequence rule; an explicit budget's policy is
    the exact one."""
    xs = jnp.zeros((300, B, NIN))
    default = memjax.explain(lstm_f(), INIT, xs, verbose=False)
    assert not default.plan.policy.optimal
    assert (
        f"closed form for the default budget, no table: the optimum is at least {default.plan.policy.lower_bound}"
        in str(default)
    )
    exact = memjax.explain(lstm_f(), INIT, xs, memory=0.2, verbose=False)
    assert exact.plan.policy.optimal and "closed form" not in str(exact)


def test_length_zero_reports_no_negative_bytes():
    f = lambda c, x: (jnp.sin(c) * x, x)  # noqa: E731  (has residuals, so internal > carry)
    init, xs = jnp.zeros(3), jnp.zeros((0, 3))
    plan = memjax.plan_scan(f, init, xs, memory=1.0)
    e = memjax.explain(f, init, xs, memory=1.0, verbose=False)
    assert plan.store_all_bytes >= 0 and plan.stored_bytes >= 0, (plan.store_all_bytes, plan.stored_bytes)
    assert e.store_all_bytes >= 0 and 0 <= e.stored_bytes <= e.budget_bytes
