"""memjax.haiku's unrolls and report against Haiku's own: ``hk.dynamic_unroll`` and ``hk.static_unroll``.

The oracle of every case is Haiku's loop on the same core and parameters: values and gradients (w.r.t. the
parameters and the inputs) agree to float32 round-off, ``init`` gives Haiku's parameters bit for bit, and the
memjax path really runs (its scan primitive is in the jaxpr). Sizes are tiny: each case compiles one jitted
function holding both gradients, a few seconds on a shared CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

hk = pytest.importorskip("haiku", reason="needs dm-haiku (pip install memjax[haiku])")

import memjax.haiku
from memjax._measure import tree_bytes
from tests.helpers import assert_trees_close, scalar_of, uses_memjax

T, B, D, H = 5, 3, 2, 4
MEMORY = 0.3  # below store_all's, so that the schedule recomputes


def assert_matches_haiku(make_core, reference, adapter, inputs, batch=B, **kwargs):
    """``adapter(core, inputs, core.initial_state(batch), memory=MEMORY, **kwargs)`` inside ``hk.transform``
    has the values and gradients of ``reference(core, inputs, core.initial_state(batch), **kwargs)``."""

    def model(unroll, **memjax_kwargs):
        def forward(inputs):
            core = make_core()
            return scalar_of(unroll(core, inputs, core.initial_state(batch), **kwargs, **memjax_kwargs))

        return hk.transform(forward)

    ref, mem = model(reference), model(adapter, memory=MEMORY)
    params = ref.init(jax.random.key(0), inputs)
    assert_trees_close(mem.init(jax.random.key(0), inputs), params, rtol=0, atol=0)  # init is Haiku's own
    assert uses_memjax(lambda p: mem.apply(p, None, inputs), params)

    def value_and_grad(m):
        return jax.value_and_grad(m.apply, argnums=(0, 2), allow_int=True)

    both = jax.jit(lambda p, x: (value_and_grad(ref)(p, None, x), value_and_grad(mem)(p, None, x)))
    (value_ref, grad_ref), (value_mem, grad_mem) = both(params, inputs)
    np.testing.assert_allclose(value_mem, value_ref, rtol=1e-5)
    assert_trees_close(grad_mem, grad_ref, what="grad")


def lstm():
    return hk.LSTM(H)


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(1), (T, B, D))


def test_all_states_batch_major(xs):
    assert_matches_haiku(
        lstm,
        hk.dynamic_unroll,
        memjax.haiku.dynamic_unroll,
        jnp.swapaxes(xs, 0, 1),
        time_major=False,
        return_all_states=True,
    )


def test_reverse_deep_rnn_of_two_lstms_with_nested_inputs(xs):
    def core():  # a dict of inputs, and a state nested two deep (a tuple of LSTMStates)
        return hk.DeepRNN([lambda x: jnp.concatenate([x["a"], jnp.sin(x["b"])], -1), hk.LSTM(H), hk.LSTM(3)])

    assert_matches_haiku(core, hk.dynamic_unroll, memjax.haiku.dynamic_unroll, {"a": xs, "b": 2 * xs}, reverse=True)


@pytest.mark.slow
def test_deep_rnn_with_skip_connections(xs):
    def core():
        return hk.deep_rnn_with_skip_connections([hk.LSTM(H), hk.GRU(3)])

    assert_matches_haiku(
        core,
        hk.dynamic_unroll,
        memjax.haiku.dynamic_unroll,
        jnp.swapaxes(xs, 0, 1),
        time_major=False,
        return_all_states=True,
    )


def test_reset_core(xs):
    should_reset = jnp.array(
        [[False, False, True], [False, True, False], [True, False, False], [False, False, False], [False, True, True]]
    )
    assert_matches_haiku(
        lambda: hk.ResetCore(hk.LSTM(H)), hk.dynamic_unroll, memjax.haiku.dynamic_unroll, (xs, should_reset)
    )


def test_static_unroll(xs):
    assert_matches_haiku(
        lambda: hk.GRU(H), hk.static_unroll, memjax.haiku.static_unroll, jnp.swapaxes(xs, 0, 1), time_major=False
    )


def test_static_unroll_all_states_are_the_dynamic_ones(xs):
    def forward(xs):
        core = hk.GRU(H)
        return (
            memjax.haiku.static_unroll(core, xs, core.initial_state(B), return_all_states=True),
            hk.dynamic_unroll(core, xs, core.initial_state(B), return_all_states=True),
        )

    model = hk.transform(forward)
    static, dynamic = model.apply(model.init(jax.random.key(0), xs), None, xs)
    assert_trees_close(static, dynamic)


def test_dynamic_unroll_outside_a_transform_runs_memjax_scan(xs):
    """A core that is a plain function: hk.dynamic_unroll runs jax.lax.scan, the adapter memjax.scan."""
    w = 0.5 * jax.random.normal(jax.random.key(2), (H + D, H))

    def core(w):
        return lambda x, h: (jnp.sum(h, -1), jnp.tanh(jnp.concatenate([h, x], -1) @ w))

    def loss(w, unroll, **kwargs):
        return scalar_of(unroll(core(w), xs, jnp.zeros((B, H)), reverse=True, **kwargs))

    assert uses_memjax(lambda w: loss(w, memjax.haiku.dynamic_unroll, memory=MEMORY), w)
    ref, mem = jax.jit(
        lambda w: (
            jax.value_and_grad(loss)(w, hk.dynamic_unroll),
            jax.value_and_grad(loss)(w, memjax.haiku.dynamic_unroll, memory=MEMORY),
        )
    )(w)
    assert_trees_close(mem, ref)


def test_explain_reports_the_core_state_under_its_module_name(xs, capsys):
    def report(xs):
        core = hk.DeepRNN([hk.LSTM(H), hk.LSTM(3)], name="stack")
        state = core.initial_state(B)
        return memjax.haiku.explain(core, xs, state, memory=MEMORY, verbose=not hk.running_init()), state

    def forward(xs):  # the same stack, unrolled
        core = hk.DeepRNN([hk.LSTM(H), hk.LSTM(3)], name="stack")
        return hk.dynamic_unroll(core, xs, core.initial_state(B))

    model = hk.transform(report)
    params = model.init(jax.random.key(0), xs)
    assert_trees_close(params, hk.transform(forward).init(jax.random.key(0), xs), rtol=0, atol=0)
    capsys.readouterr()
    explanation, state = model.apply(params, None, xs)
    printed = capsys.readouterr().out
    assert explanation.carry_bytes == tree_bytes(state) == 2 * B * (H + 3) * 4
    assert explanation.plan.length == T
    assert explanation.title == "DeepRNN 'stack' (haiku)"
    assert printed.splitlines()[0] == "memjax.explain: DeepRNN 'stack' (haiku)"
    assert printed.strip() == str(explanation)


@pytest.fixture
def rng_reserve_size_3():
    before = hk.experimental.rng_reserve_size(3)
    yield
    hk.experimental.rng_reserve_size(before)


def test_explain_batch_major_leaves_the_random_stream_alone(xs, rng_reserve_size_3):
    """Haiku reserves keys in blocks (here of 3): explain must not reserve any in the caller's sequence."""

    def forward(xs):
        first = hk.next_rng_key()
        core = hk.LSTM(H)
        explanation = memjax.haiku.explain(
            core, jnp.swapaxes(xs, 0, 1), core.initial_state(B), time_major=False, verbose=False
        )
        return explanation, [first] + [hk.next_rng_key() for _ in range(4)]

    model = hk.transform(forward)
    params = model.init(jax.random.key(0), xs)
    assert jax.tree_util.tree_map(jnp.shape, params) == {"lstm/linear": {"b": (4 * H,), "w": (D + H, 4 * H)}}
    explanation, keys = model.apply(params, jax.random.key(3), xs)
    expected = hk.transform(lambda: [hk.next_rng_key() for _ in range(5)]).apply({}, jax.random.key(3))
    np.testing.assert_array_equal(jax.random.key_data(jnp.stack(keys)), jax.random.key_data(jnp.stack(expected)))
    assert explanation.title == "LSTM 'lstm' (haiku)"
    assert explanation.plan.length == T
    # With an RNG, the frame's sequence travels in the carry too, as in hk.scan: its key and a full block of
    # reserved subkeys.
    assert explanation.carry_bytes == 2 * B * H * 4 + 4 * jax.random.key_data(jax.random.key(3)).nbytes


def test_explain_outside_transform_raises(xs):
    with pytest.raises(ValueError, match="inside hk.transform"):
        memjax.haiku.explain(hk.LSTM, xs, None)
