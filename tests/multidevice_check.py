"""Run by tests/test_multidevice.py in a subprocess, ``python -m tests.multidevice_check`` from the repository
root: memjax.scan over 8 forced host devices.

XLA_FLAGS must be set before jax is imported, which is why this is a separate process. Prints one JSON object
on its last line (errors against single-device lax.scan, per-device temp memory for several budgets); the test
makes the assertions.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import functools  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import shard_map  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402

import memjax  # noqa: E402
from tests.helpers import KEY, NIN, lstm_step, tiny_lstm  # noqa: E402

N_DEV, B, T = 8, 8, 24  # the tests' LSTM (tests.helpers.tiny_lstm) with a batch of 8: one sequence per device
MEMORY = 0.3


def max_rel_err(actual, expected, rtol=1e-5) -> float:
    """The largest ``|a - e| / (rtol |e| + atol)`` over all leaves, ``atol = rtol max(1, max |e|)`` as in
    tests.helpers.assert_trees_close: at most 1 means "equal within rtol"."""
    worst = 0.0
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape, (a.shape, e.shape)
        atol = rtol * max(1.0, float(np.max(np.abs(e), initial=0.0)))
        worst = max(worst, float(np.max(np.abs(a - e) / (rtol * np.abs(e) + atol), initial=0.0)))
    return worst


def loss_from(carry, ys):
    h, c = carry
    return jnp.sum(ys**2 * jnp.linspace(0.5, 1.5, ys.shape[-1])) + jnp.sum(jnp.sin(h) * c)


def full_loss(scan_fn, params, init, xs, **kw):
    carry, ys = scan_fn(functools.partial(lstm_step, params), init, xs, **kw)
    return loss_from(carry, ys)


def main():
    assert jax.device_count() == N_DEV, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("b",))
    params, init, xs = tiny_lstm(T, batch=B)
    result = {"devices": jax.device_count()}

    # Reference: one device, lax.scan.
    ref = jax.jit(jax.value_and_grad(functools.partial(full_loss, jax.lax.scan), argnums=(0, 1, 2)))(params, init, xs)

    # 1. jit with the batch sharded over the mesh.
    batch = NamedSharding(mesh, PS("b"))
    seq_batch = NamedSharding(mesh, PS(None, "b"))
    replicated = NamedSharding(mesh, PS())
    s_params = jax.device_put(params, replicated)
    s_init = jax.device_put(init, batch)
    s_xs = jax.device_put(xs, seq_batch)

    def sharded_grad(memory):
        return jax.jit(jax.value_and_grad(functools.partial(full_loss, memjax.scan, memory=memory), argnums=(0, 1, 2)))

    out = sharded_grad(MEMORY)(s_params, s_init, s_xs)
    result["jit_sharded_err"] = max_rel_err(out, ref)
    result["jit_sharded_xs_grad_sharding"] = str(out[1][2].sharding.spec)

    # 2. shard_map: each device scans its part of the batch; params replicated (their cotangent is summed by JAX).
    def per_device(params, init, xs, memory):
        return memjax.scan(functools.partial(lstm_step, params), init, xs, memory=memory)

    def shard_mapped_loss(params, init, xs, memory):
        fn = shard_map(
            functools.partial(per_device, memory=memory),
            mesh=mesh,
            in_specs=(PS(), PS("b"), PS(None, "b")),
            out_specs=((PS("b"), PS("b")), PS(None, "b")),
        )
        carry, ys = fn(params, init, xs)
        return loss_from(carry, ys)

    try:
        out = jax.jit(jax.value_and_grad(functools.partial(shard_mapped_loss, memory=MEMORY), argnums=(0, 1, 2)))(
            s_params, s_init, s_xs
        )
        result["shard_map_err"] = max_rel_err(out, ref)
    except Exception as error:  # reported, so that the other checks still run
        result["shard_map_error"] = f"{type(error).__name__}: {error}"

    # 3. per-device temp memory of the sharded gradient, for falling budgets (a longer sequence).
    long_xs = jax.device_put(jax.random.normal(jax.random.fold_in(KEY, 4), (400, B, NIN)), seq_batch)
    temps = {}
    for memory in (0.5, 0.2, 0.05):
        compiled = (
            jax.jit(jax.grad(functools.partial(full_loss, memjax.scan, memory=memory)))
            .lower(s_params, s_init, long_xs)
            .compile()
        )
        temps[str(memory)] = compiled.memory_analysis().temp_size_in_bytes
    result["jit_temp_bytes"] = temps
    if "shard_map_error" not in result:
        temps = {}
        for memory in (0.5, 0.2, 0.05):
            compiled = (
                jax.jit(jax.grad(functools.partial(shard_mapped_loss, memory=memory)))
                .lower(s_params, s_init, long_xs)
                .compile()
            )
            temps[str(memory)] = compiled.memory_analysis().temp_size_in_bytes
        result["shard_map_temp_bytes"] = temps
    print(json.dumps(result))


if __name__ == "__main__":
    main()
