"""Shared builders and checks of the test files, imported explicitly: ``from tests.helpers import ...``.

Plain functions and constants only; the pytest fixtures are in conftest.py. Models are tiny on purpose: the cost
of these tests is XLA compilation, which does not grow with the hidden size.
"""

from __future__ import annotations

import functools
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

import memjax
from memjax.models import gru, lstm

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository: where ``python -m tests.<script>`` runs

RTOL = {
    np.dtype(np.float32): 1e-5,
    np.dtype(np.float64): 1e-10,
    np.dtype(np.complex64): 1e-5,
    np.dtype(np.complex128): 1e-10,
    np.dtype(jnp.bfloat16): 2e-2,
    np.dtype(np.float16): 2e-3,
}


# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------


# The models are memjax.models' own (parameters {"W", "U", "b"}, gate pre-activations named "gates", an identity
# unless a jax.checkpoint policy such as save_only_these_names("gates") reads the name); the helpers below add
# the tests' dtypes, random initial states and a dict carry with an integer counter.


def lstm_params(key, n_in: int, hidden: int, dtype=jnp.float32) -> dict:
    return lstm.init_params(key, n_in, hidden, dtype=dtype)


lstm_step = lstm.step  # carry (h, c), output h


def lstm_init(batch: int, hidden: int, dtype=jnp.float32, key=None):
    """The zero carry, or with ``key`` a random one (so that the initial carry's gradient is not trivial)."""
    if key is None:
        return lstm.initial_carry(batch, hidden, dtype)
    k1, k2 = jax.random.split(key)
    return (
        (jax.random.normal(k1, (batch, hidden)) * 0.5).astype(dtype),
        (jax.random.normal(k2, (batch, hidden)) * 0.5).astype(dtype),
    )


def gru_params(key, n_in: int, hidden: int, dtype=jnp.float32) -> dict:
    return gru.init_params(key, n_in, hidden, dtype=dtype)


def gru_step(params, carry, x):
    """The GRU of memjax.models.gru over a dict carry ``{"h": (B, H) float, "n": () int32 step counter}``.

    The counter scales the state fed back (so it is used, not just carried); outputs are a dict too.
    """
    h, n = carry["h"], carry["n"]
    h, _ = gru.step(params, h * jnp.cos(n.astype(h.dtype) * 0.3), x)
    return {"h": h, "n": n + 1}, {"out": h, "n": n}


def gru_init(batch: int, hidden: int, dtype=jnp.float32, key=None) -> dict:
    h = (
        gru.initial_carry(batch, hidden, dtype)
        if key is None
        else (jax.random.normal(key, (batch, hidden)) * 0.5).astype(dtype)
    )
    return {"h": h, "n": jnp.asarray(3, jnp.int32)}


# The tests' LSTM: batch B, hidden size H, NIN inputs, drawn from KEY (one draw for every length and dtype).
B, H, NIN = 2, 4, 3
KEY = jax.random.PRNGKey(0)


def tiny_lstm(length: int, dtype=jnp.float32, batch: int = B) -> tuple:
    """``(params, init, xs)`` of the tests' LSTM over ``length`` steps, in ``dtype``: random parameters, a random
    initial carry (so that its gradient is not trivial) and inputs of shape ``(length, batch, NIN)``."""
    params = lstm_params(jax.random.fold_in(KEY, 1), NIN, H, dtype)
    init = lstm_init(batch, H, dtype, key=jax.random.fold_in(KEY, 2))
    xs = jax.random.normal(jax.random.fold_in(KEY, 3), (length, batch, NIN)).astype(dtype)
    return params, init, xs


def affine_case(length: int, with_xs: bool, key) -> tuple:
    """``(step, params, init, xs)`` of an affine recurrence ``h <- A h + c + x`` of width 3 (``xs`` None unless
    ``with_xs``): the simplest step, one of the property test's families."""
    n = 3
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"A": jax.random.normal(k1, (n, n)) * 0.4, "c": jax.random.normal(k2, (n,)) * 0.1}
    init = jax.random.normal(k3, (n,))
    xs = jax.random.normal(k4, (length, n)) if with_xs else None

    def step(params, h, x):
        h = params["A"] @ h + params["c"] + (0.0 if x is None else x)
        return h, h * 2.0

    return step, params, init, xs


# ------------------------------------------------------------------------------------------------------------------
# Running a scan and its gradient, memjax or lax
# ------------------------------------------------------------------------------------------------------------------


def _weights(shape, salt: int) -> np.ndarray:
    """Fixed weights, computed in numpy: computed by XLA they could differ by an ulp between two programs."""
    size = int(np.prod(shape, dtype=np.int64))
    return np.sin(np.arange(size, dtype=np.float64) * 0.7 + salt).astype(np.float32).reshape(shape)


def scalar_of(tree) -> jax.Array:
    """A fixed, generic linear functional of all inexact leaves of ``tree`` (so every output gets a cotangent)."""
    total = jnp.zeros((), jnp.float32)
    for salt, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            w = (_weights(leaf.shape, salt) * (1 + 0.5j)).astype(leaf.dtype)
            total = total + jnp.sum(jnp.real(leaf * w)).astype(jnp.float32)
        elif jnp.issubdtype(leaf.dtype, jnp.floating):
            w = _weights(leaf.shape, salt)
            if leaf.dtype == jnp.float64:
                total = total.astype(jnp.float64)
                w = w.astype(np.float64)
            total = total + jnp.sum(leaf.astype(w.dtype) * w)
    return total


def scan_loss(scan_fn, step, params, init, xs, **scan_kwargs):
    carry, ys = scan_fn(functools.partial(step, params), init, xs, **scan_kwargs)
    return scalar_of((carry, ys)), (carry, ys)


def value_and_grads(scan_fn, step, params, init, xs, *, jit: bool = True, **scan_kwargs):
    """``((carry, ys), (d params, d init, d xs))`` of :func:`scan_loss`, w.r.t. params, init and xs."""

    def loss(params, init, xs):
        return scan_loss(scan_fn, step, params, init, xs, **scan_kwargs)

    fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True, allow_int=True)
    if jit:
        fn = jax.jit(fn)
    (_, outputs), grads = fn(params, init, xs)
    return jax.device_get(outputs), jax.device_get(grads)


def lax_scan(f, init, xs=None, length=None, reverse=False, unroll=1, **_ignored):
    return jax.lax.scan(f, init, xs, length=length, reverse=reverse, unroll=unroll)


def uses_memjax(fn, *args) -> bool:
    """Whether ``fn(*args)`` runs memjax's scan primitive (rather than falling back to a framework's own scan)."""
    return "ScanPrimitive" in str(jax.make_jaxpr(fn)(*args))


# ------------------------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------------------------


def assert_trees_equal_structure(actual, expected):
    ta, te = jax.tree_util.tree_structure(actual), jax.tree_util.tree_structure(expected)
    assert ta == te, f"pytree structures differ:\n  memjax: {ta}\n  lax:    {te}"


def assert_trees_close(actual, expected, rtol=None, atol=None, what="value"):
    """Same structure, same dtypes (float0 included) and shapes, and values within tolerance (NaNs in the same
    places: ``assert_allclose`` treats NaN as equal to NaN only where both have one)."""
    assert_trees_equal_structure(actual, expected)
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    for (path, e), a in zip(paths, jax.tree_util.tree_leaves(actual)):
        name = f"{what}{jax.tree_util.keystr(path)}"
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype, f"{name}: dtype {a.dtype} != lax.scan's {e.dtype}"
        assert a.shape == e.shape, f"{name}: shape {a.shape} != lax.scan's {e.shape}"
        if e.dtype == jax.dtypes.float0:
            continue
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(a, e, err_msg=name)
            continue
        r = RTOL.get(e.dtype, 1e-5) if rtol is None else rtol
        finite = np.abs(e[np.isfinite(e)].astype(np.complex128 if e.dtype.kind == "c" else np.float64))
        scale = float(np.max(finite, initial=1.0))
        tol = r * max(scale, 1.0) if atol is None else atol  # float noise is relative to the leaf's scale
        if jnp.issubdtype(e.dtype, jnp.floating):  # bfloat16 and float16 compared in float64
            a, e = a.astype(np.float64), e.astype(np.float64)
        np.testing.assert_allclose(a, e, rtol=r, atol=tol, err_msg=name)


def assert_trees_allclose(actual, expected, rtol=1e-5, atol=1e-6):
    """Same structure, at least one leaf, and every leaf within ``rtol`` and a fixed ``atol`` of the other's,
    compared in float64 (PRNG keys by their data); dtypes are not compared. The check of the framework adapters,
    whose oracle is the framework's own loop rather than lax.scan."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(actual)
    leaves_e, tree_e = jax.tree_util.tree_flatten(expected)
    assert tree_a == tree_e, f"structures differ:\n{tree_a}\n{tree_e}"
    assert leaves_a, "nothing to compare"
    for a, e in zip(leaves_a, leaves_e):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, e = jax.random.key_data(a), jax.random.key_data(e)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol)


def assert_trees_bitwise_equal(actual, expected, what="value"):
    assert_trees_equal_structure(actual, expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape, what
        if e.dtype == jax.dtypes.float0:
            continue
        assert a.tobytes() == e.tobytes(), f"{what}: not bitwise equal"


# ------------------------------------------------------------------------------------------------------------------
# Budgets
# ------------------------------------------------------------------------------------------------------------------


def least_bytes(f, init, xs=None, length=None, kind="msm") -> int:
    """The least budget, in bytes, memjax accepts for ``kind``, read from the ValueError of a 1-byte budget.

    The message must name the least budget: the returned number is the one in the message that is accepted
    while one byte less is refused.
    """
    try:
        memjax.plan_scan(f, init, xs, length, memory=1, kind=kind)
    except ValueError as error:
        message = str(error)
    else:
        raise AssertionError(f"plan_scan(memory=1, kind={kind!r}) did not raise ValueError")
    candidates = sorted({int(n) for n in re.findall(r"(?<![\d.])(\d+)(?![\d.])", message) if int(n) > 1})
    for n in candidates:
        try:
            memjax.plan_scan(f, init, xs, length, memory=n, kind=kind)
        except ValueError:
            continue
        try:
            memjax.plan_scan(f, init, xs, length, memory=n - 1, kind=kind)
        except ValueError:
            return n
    raise AssertionError(f"the ValueError for a 1-byte budget names no least budget in bytes: {message!r}")


def least_bytes_traced(step, params, init, xs=None, length=None, kind="msm") -> int:
    """:func:`least_bytes` for ``functools.partial(step, params)`` with params, init and xs traced, as they are
    when memjax.scan runs under jax.jit / jax.grad (what memjax measures can differ from concrete closures)."""
    found = []

    def probe(params, init, xs):
        found.append(least_bytes(functools.partial(step, params), init, xs, length, kind=kind))
        return jnp.zeros(())

    jax.eval_shape(probe, params, init, xs)
    return found[0]


def resolve(memory, kind, step, params, init, xs=None, length=None):
    """``"least"`` becomes :func:`least_bytes_traced` of ``kind`` for this scan (the least budget memjax accepts
    when the scan runs under a transformation); any other budget is returned as it is."""
    if memory == "least":
        return least_bytes_traced(step, params, init, xs, length, kind=kind)
    return memory


class Counter:
    """Counts calls from ``jax.debug.callback``."""

    def __init__(self):
        self.count = 0

    def __call__(self, *_):
        self.count += 1


def counted(step, counter: Counter):
    """``step`` that reports every evaluation to ``counter`` (the callback depends on the carry, so it is not
    hoisted out of loops)."""

    def wrapped(params, carry, x):
        jax.debug.callback(counter, jax.tree_util.tree_leaves(carry)[0])
        return step(params, carry, x)

    return wrapped


_TABLE_PAYLOAD = re.compile(r'dense<"0x([0-9A-Fa-f]+)">')


def program_size(lowered_text: str) -> tuple[int, int]:
    """(characters of the lowered program with large constant payloads elided, bytes of those payloads).

    memjax embeds its schedule as integer tables: data whose size is O(length) (16 bytes per action and 8 per
    step), while the program itself (instructions, traces of the step) must not grow with the length.
    """
    payload = sum(len(m.group(1)) // 2 for m in _TABLE_PAYLOAD.finditer(lowered_text))
    return len(_TABLE_PAYLOAD.sub('dense<"0x">', lowered_text)), payload
