"""memjax.scan over 8 devices (forced host devices): jit with the batch sharded over a mesh, and shard_map.

The work runs in a subprocess, ``python -m tests.multidevice_check`` from the repository root, because XLA_FLAGS
must be set before JAX is imported. The oracle is lax.scan on one device: values and gradients within rtol 1e-5;
and the per-device temp memory XLA reports must fall with the budget.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@functools.cache
def multidevice_results() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multidevice_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_multidevice_jit_with_sharded_batch():
    result = multidevice_results()
    assert result["devices"] == 8
    assert result["jit_sharded_err"] <= 1.0, result  # within rtol 1e-5 of single-device lax.scan
    temps = [result["jit_temp_bytes"][m] for m in ("0.5", "0.2", "0.05")]
    assert temps[0] > temps[1] > temps[2], temps


@pytest.mark.slow
def test_multidevice_shard_map():
    result = multidevice_results()
    assert "shard_map_error" not in result, result["shard_map_error"]
    assert result["shard_map_err"] <= 1.0, result
    temps = [result["shard_map_temp_bytes"][m] for m in ("0.5", "0.2", "0.05")]
    assert temps[0] > temps[1] > temps[2], temps
