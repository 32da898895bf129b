"""The executors (memjax._executor): which one runs a plan, what its backward sweep dispatches, and gradients of
the pipelined executor against lax.scan, first and second order.

Dispatch is counted in the very program JAX builds: every ``cond`` in the gradient's jaxpr, multiplied by the
trip counts of the ``scan``s around it; a ``while`` (a loop whose trip count XLA cannot see) fails the count.
"""

from __future__ import annotations

import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import memjax
from tests.helpers import KEY, NIN, B, assert_trees_close, lstm_init, lstm_step, tiny_lstm

P, INIT, _ = tiny_lstm(0)  # the inputs of each length come from xs_of


def xs_of(t):
    return jax.random.normal(jax.random.fold_in(KEY, t), (t, B, NIN))


def count_dispatch(jaxpr) -> int:
    """Conditionals the jaxpr evaluates: each ``cond`` counts once plus its costliest branch, a ``scan`` its body
    times its length. Raises on a ``while``: its trip count is not static."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "while":
            raise AssertionError("a while loop: a trip count XLA cannot see")
        if name == "cond":
            total += 1 + max(count_dispatch(branch.jaxpr) for branch in eqn.params["branches"])
        elif name == "scan":
            total += eqn.params["length"] * count_dispatch(eqn.params["jaxpr"].jaxpr)
        else:
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                total += count_dispatch(sub)
    return total


def loss(params, init, xs, memory, kind, reverse=False):
    carry, ys = memjax.scan(functools.partial(lstm_step, params), init, xs, memory=memory, kind=kind, reverse=reverse)
    return jnp.sum(carry[0] * carry[1]) + jnp.sum(jnp.sin(ys))


def lax_loss(params, init, xs, reverse=False):
    carry, ys = jax.lax.scan(functools.partial(lstm_step, params), init, xs, reverse=reverse)
    return jnp.sum(carry[0] * carry[1]) + jnp.sum(jnp.sin(ys))


def plan_of(t, memory, kind="msm", executor="auto"):
    return memjax.plan_scan(
        functools.partial(lstm_step, P), INIT, xs_of(t), memory=memory, kind=kind, executor=executor
    )


# (length, memory, kind) -> the executor expected. The pipelined cases include schedules that store hidden states,
# checkpoints (internal states stored inside the first sweep) and advance without storing; an internal state of
# this LSTM is 7 carries, so that small budgets leave no room for the pipeline's extra internal states and run
# the interpreter; hsm stores hidden states in its backward sweep.
CASES = [
    (120, None, "msm", "pipelined"),
    (120, None, "ism", "pipelined"),
    (120, 0.3, "msm", "pipelined"),
    (80, 0.1, "chen", "pipelined"),
    (2, None, "msm", "pipelined"),
    (50, 0.2, "msm", "interpreter"),
    (40, 0.1, "hsm", "interpreter"),
    (40, 1.0, "store_all", "lax.scan"),
]


@pytest.mark.parametrize("t, memory, kind, executor", CASES)
def test_executor_and_its_dispatch(t, memory, kind, executor):
    plan = plan_of(t, memory, kind)
    assert plan.executor == executor
    grad = jax.grad(loss, argnums=(0, 1, 2))
    jaxpr = jax.make_jaxpr(grad, static_argnums=(3, 4))(P, INIT, xs_of(t), memory, kind).jaxpr
    assert count_dispatch(jaxpr) == plan.conditionals
    if executor == "pipelined":
        assert plan.conditionals == 0
        assert plan.stored_bytes <= plan.budget_bytes


@pytest.mark.parametrize("t, memory, kind, executor", [c for c in CASES if c[3] != "lax.scan"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_equal_lax_scan(t, memory, kind, executor, reverse):
    xs = xs_of(t)
    ours = jax.grad(loss, argnums=(0, 1, 2))(P, INIT, xs, memory, kind, reverse)
    theirs = jax.grad(lax_loss, argnums=(0, 1, 2))(P, INIT, xs, reverse)
    assert_trees_close(ours, theirs)


def test_pipelined_second_order_equals_lax_scan():
    xs = xs_of(120)
    plan = plan_of(120, 0.3)
    assert plan.executor == "pipelined" and len(plan.pipeline.checkpoint_step) > 0

    def outer(memory):
        def inner(params):
            g = jax.grad(loss if memory != "lax" else lax_loss)
            return jax.tree_util.tree_reduce(
                lambda a, b: a + jnp.sum(b**2), g(params, INIT, xs, *(() if memory == "lax" else (memory, "msm"))), 0.0
            )

        return jax.grad(inner)(P)

    assert_trees_close(outer(0.3), outer("lax"), rtol=1e-4)


@pytest.mark.parametrize("memory", [None, "5%"])
def test_dispatch_of_the_papers_lstm(memory):
    """LSTM in the paper's setting (256 units, batch 64), T=1000: no conditional (the issue asked for T/10 at
    most), pipelined (what ``executor="auto"`` runs on an accelerator)."""
    t, hidden, batch = 1000, 256, 64
    params = {"W": jnp.zeros((hidden, 4 * hidden)), "U": jnp.zeros((hidden, 4 * hidden)), "b": jnp.zeros(4 * hidden)}
    init = lstm_init(batch, hidden)
    plan = memjax.plan_scan(
        functools.partial(lstm_step, params), init, jnp.zeros((t, batch, hidden)), memory=memory, executor="pipelined"
    )
    assert plan.executor == "pipelined"
    assert plan.conditionals == 0
    assert plan.stored_bytes <= plan.budget_bytes
    assert plan.forward_count <= 2 * t


def test_auto_executor_follows_the_platform():
    """``executor="auto"``: on the CPU, the pipeline for small carries only; the interpreter's default budget is
    the two-forward policy's memory, the pipeline's that plus its extra internal states."""
    t, hidden, batch = 200, 256, 64
    params = {"W": jnp.zeros((hidden, 4 * hidden)), "U": jnp.zeros((hidden, 4 * hidden)), "b": jnp.zeros(4 * hidden)}
    big = functools.partial(
        memjax.plan_scan, functools.partial(lstm_step, params), lstm_init(batch, hidden), jnp.zeros((t, batch, hidden))
    )
    small = plan_of(t, None)
    if jax.default_backend() == "cpu":
        assert big().executor == "interpreter" and small.executor == "pipelined"
    else:
        assert big().executor == "pipelined"
    interpreted, pipelined = big(executor="interpreter"), big(executor="pipelined")
    assert (interpreted.executor, pipelined.executor) == ("interpreter", "pipelined")
    assert interpreted.budget_bytes < pipelined.budget_bytes
    assert interpreted.forward_count <= 2 * t and pipelined.forward_count <= 2 * t


def test_bad_executor_names_the_argument():
    with pytest.raises(ValueError, match="executor='fast' is not an executor; use one of 'auto'"):
        plan_of(10, None, executor="fast")


def test_interpreter_dispatch_is_counted_per_row():
    plan = plan_of(40, 0.1, "hsm")
    tables_rows = (plan.conditionals - 2 * 39) / 7
    assert tables_rows == int(tables_rows) and tables_rows >= plan.forward_count - 40
    np.testing.assert_equal(plan.executor, "interpreter")


def test_explain_reports_the_executor_and_its_conditionals(capsys):
    pipelined = memjax.explain(functools.partial(lstm_step, P), INIT, xs_of(120), memory=0.3)
    out = capsys.readouterr().out
    assert pipelined.executor == "pipelined" and pipelined.conditionals == plan_of(120, 0.3).conditionals
    assert f"pipelined, {pipelined.conditionals} conditionals per gradient" in out
    assert "(the policy's own: " in out  # the pipeline recomputes its checkpoints: more forwards than the policy
    interpreted = memjax.explain(
        functools.partial(lstm_step, P), INIT, xs_of(40), memory=0.1, kind="hsm", verbose=False
    )
    assert interpreted.executor == "interpreter"
    assert f"interpreter (one row per action), {interpreted.conditionals} conditionals" in str(interpreted)


def _tanh_rnn(params, carry, x):
    """A carry of two leaves whose second is a residual of its own VJP (tanh's output), and a first that is not."""
    w, u = params
    count, h = carry
    h = jnp.tanh(h @ w + x @ u)
    return (count + jnp.sum(x), h), jnp.sum(h**2)


@pytest.mark.parametrize(
    "memory, kind, executor",
    [(None, "msm", "auto"), (0.2, "msm", "interpreter"), (0.2, "ism", "auto"), (0.1, "chen", "auto")],
)
def test_a_residual_that_is_the_returned_carry_is_stored_once(memory, kind, executor):
    """tanh's output is both the new carry and a residual of the step's VJP: an internal state holds it once (the
    carry's copy), and gradients still equal lax.scan's, pipelined and interpreted."""
    t, hidden = 60, 5
    params = (
        jax.random.normal(KEY, (hidden, hidden)) * 0.5,
        jax.random.normal(jax.random.fold_in(KEY, 1), (NIN, hidden)),
    )
    init = (jnp.zeros(()), jnp.zeros((B, hidden)))
    xs = xs_of(t)
    plan = memjax.plan_scan(functools.partial(_tanh_rnn, params), init, xs, memory=memory, kind=kind, executor=executor)
    assert [c for c in plan.sizes.from_carry if c >= 0] == [1]  # the carry's second leaf, h

    def copied(params, carry, x):  # the same step returning a copy of tanh's output: nothing to share
        (count, h), y = _tanh_rnn(params, carry, x)
        return (count, h * 1.0), y

    other = memjax.plan_scan(functools.partial(copied, params), init, xs, memory=memory, kind=kind, executor=executor)
    assert plan.sizes.residual_bytes == other.sizes.residual_bytes - B * hidden * 4

    def ours(params, init, xs):
        step = functools.partial(_tanh_rnn, params)
        carry, ys = memjax.scan(step, init, xs, memory=memory, kind=kind, executor=executor)
        return carry[1].sum() + carry[0] + ys.sum()

    def theirs(params, init, xs):
        carry, ys = jax.lax.scan(functools.partial(_tanh_rnn, params), init, xs)
        return carry[1].sum() + carry[0] + ys.sum()

    if executor == "interpreter" or memory is None:
        assert plan.executor == {"auto": "pipelined", "interpreter": "interpreter"}[executor]
    assert_trees_close(
        jax.grad(ours, argnums=(0, 1, 2))(params, init, xs), jax.grad(theirs, argnums=(0, 1, 2))(params, init, xs)
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's compilation of small loops")
def test_a_near_free_step_compiles_its_loops_into_kernels_as_lax_scan_does():
    """XLA:CPU compiles a loop that accesses under 1 KiB per iteration into one kernel, and runs any other one
    kernel launch per operation per iteration (about 30x slower for a nearly free step). The default plan's
    loops, for a carry of 4 floats, are all compiled whole wherever ``lax.scan`` over ``jax.checkpoint(body)``'s
    are (the pipelined backward sweep is one loop with a small body)."""
    t, n = 1000, 4
    w, xs, init = jnp.eye(n) * 0.5, jnp.ones((t, 1, n)), jnp.zeros((1, n))

    def step(w, h, x):
        h = jnp.tanh(h @ w + x)
        return h, jnp.sum(h)

    def entry_loops(scan):
        def loss(w, xs):
            return jnp.sum(scan(functools.partial(step, w), init, xs)[1])

        hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w, xs).compile().as_text()
        entry = hlo[hlo.index("\nENTRY ") :]
        return hlo.count("xla_cpu_small_call"), entry[: entry.index("\n}")].count(" while(")

    checkpointed = jax.checkpoint(step)
    hoisted, left = entry_loops(lambda f, i, x: jax.lax.scan(lambda c, x: checkpointed(w, c, x), i, x))
    if hoisted == 0:
        pytest.skip("this XLA compiles no loop whole")
    assert left == 0
    hoisted, left = entry_loops(memjax.scan)
    assert hoisted >= 3 and left == 0
