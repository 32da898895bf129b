"""The command line (``python -m memjax demo`` / ``plan``) and smoke runs of the benchmarks, so they do not rot."""

from __future__ import annotations

import io
import pathlib
import re
import subprocess
import sys

import pytest

import memjax.planning
from memjax import _demo, _plan_report
from memjax.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _run(*args, timeout=120):
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_corpus_is_shipped_text():
    text = _demo.load_corpus()
    assert 100_000 <= len(text) <= 300_000
    assert "Beautiful is better than ugly." in text
    assert text.isascii()


def test_demo_loss_goes_down_and_table_printed(capsys):
    code = main(
        [
            "demo",
            "--length",
            "64",
            "--steps",
            "40",
            "--batch",
            "4",
            "--hidden",
            "16",
            "--embed",
            "8",
            "--memory",
            "10%",
            "--lr",
            "0.03",
            "--repeats",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    first, last = map(float, re.search(r"loss (\d+\.\d+) -> (\d+\.\d+) nats/char", out).groups())
    assert last < first - 0.3, out
    assert "| jax.lax.scan |" in out and "| memjax.scan (msm, 10%) |" in out
    difference = float(re.search(r"max \|grad memjax - grad lax\.scan\| on one batch: (\S+)", out).group(1))
    assert difference < 1e-4


def test_run_demo_returns_measurements():
    result = _demo.run_demo(
        length=32,
        memory=None,
        kind="hsm",
        steps=3,
        batch=2,
        hidden=8,
        embed=4,
        repeats=1,
        progress=False,
        out=io.StringIO(),
    )
    assert len(result.losses) == 3 and len(result.step_seconds) == 3
    rows = result.rows
    assert set(rows) == {"jax.lax.scan", "memjax.scan (hsm, None)"}
    assert rows["jax.lax.scan"]["forwards_per_step"] == 1.0
    assert rows["memjax.scan (hsm, None)"]["forwards_per_step"] <= 2.0
    assert result.max_grad_difference < 1e-4


def test_plan_prints_cost_and_picture():
    out = _run("-m", "memjax", "plan", "--length", "1000", "--memory", "5%", "--alpha", "5", "--height", "12")
    policy = memjax.planning.solve(1000, 0.05 * (1 + 999 * 5), alpha=5, kind="msm")
    assert f"cost           {policy.cost} forward evaluations" in out
    assert f"{policy.forwards_per_step:.3f} forwards per step" in out
    assert "peak memory" in out and "legend:" in out
    picture = [line for line in out.splitlines() if re.match(r"^\s*\d+ \|", line)]
    assert len(picture) == 12
    assert "x" in picture[-1] and "-" in picture[0]


# ``python -m memjax plan`` in a fresh interpreter where importing JAX or optax fails: planning needs neither.
_PLAN_WITHOUT_JAX = """
import runpy, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("jax", "jaxlib", "optax"):
            raise ImportError(f"import of {name} refused: python -m memjax plan must not import it")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["memjax", "plan", "--length", "1000", "--memory", "5%", "--alpha", "5"]
runpy.run_module("memjax", run_name="__main__", alter_sys=True)
"""


def test_plan_imports_no_jax():
    out = _run("-c", _PLAN_WITHOUT_JAX)
    policy = memjax.planning.solve(1000, 0.05 * (1 + 999 * 5), alpha=5, kind="msm")
    assert f"cost           {policy.cost} forward evaluations" in out and "legend:" in out


def test_plan_units_and_actions(capsys):
    assert main(["plan", "--length", "20", "--memory", "4", "--alpha", "2", "--kind", "hsm", "--actions", "5"]) == 0
    out = capsys.readouterr().out
    assert f"cost           {memjax.planning.hsm_cost(20, 4)} forward evaluations" in out
    assert "... " in out and "advance" in out


def test_plan_rejects_bad_memory(capsys):
    assert main(["plan", "--length", "100", "--memory", "lots"]) == 2
    assert "memory='lots'" in capsys.readouterr().err
    assert main(["plan", "--length", "100", "--memory", "1", "--alpha", "4", "--kind", "chen"]) == 2


def test_plan_report_refuses_auto_kind():
    with pytest.raises(ValueError, match="kind='auto' is not a policy kind"):  # auto measures a step: plan has none
        _plan_report.plan_report(100, "5%", kind="auto")


def test_ascii_schedule_shapes():
    schedule = memjax.planning.solve(7, 3, alpha=1.0, kind="hsm").schedule()
    picture = _plan_report.ascii_schedule(schedule, width=72, height=50)
    rows = [line for line in picture.splitlines() if re.match(r"^\s*\d+ \|", line)]
    assert len(rows) == schedule.forward_count + 7  # one row per time unit when there are few
    assert all(len(line.split("|", 1)[1]) <= 7 for line in rows)
    assert sum(line.count("x") for line in rows) == 7  # each step back-propagated once


def test_lstm_benchmark_quick():
    out = _run(str(BENCHMARKS / "lstm.py"), "--quick", "--T", "100", timeout=180)
    for name in (
        "jax.lax.scan",
        "lax.scan + checkpoint(body)",
        "chen nested remat",
        "flax remat_scan",
        "equinox checkpointed (all)",
        "memjax msm 5%",
        "memjax hsm 5%",
        "memjax default (msm)",
    ):
        assert f"| {name}" in out, name
    row = next(line for line in out.splitlines() if line.startswith("| memjax msm 5%"))
    error = float(row.split("|")[11])
    assert error < 1e-5


@pytest.mark.slow
def test_lstm_benchmark_match_peers_quick():
    out = _run(str(BENCHMARKS / "lstm.py"), "--quick", "--T", "100", "--match-peers", timeout=300)
    assert "| memjax store_all, gates saved" in out
    table = out.split("#### Each peer against")[1]
    header = next(line for line in table.splitlines() if line.startswith("| peer"))
    assert "fewest fwd/step at its memory" in header
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {row[1].strip() for row in rows} >= {"jax.lax.scan", "lax.scan + checkpoint(body)"}
    for row in rows:
        own, fewest = row[4].strip(), row[5].strip()
        if own != "—" and fewest != "—":  # no schedule needs more forwards than the peer makes
            assert float(fewest) <= float(own), row


def test_gru_theory_and_compile_time_benchmarks_quick():
    out = _run(str(BENCHMARKS / "gru.py"), "--quick", "--fractions", "0.1", "--kinds", "msm", timeout=180)
    assert "GRU gradient" in out and "| memjax msm 10%" in out
    out = _run(str(BENCHMARKS / "theory.py"), "--length", "60", "--alphas", "2", "--lengths", "60", "120")
    assert "Forwards per step against memory" in out and "| MSM α=2" in out
    out = _run(str(BENCHMARKS / "compile_time.py"), "--lengths", "50", "--methods", "lax", "memjax-hsm")
    assert "| memjax hsm 5%" in out


@pytest.mark.slow
def test_gpu_benchmark_quick_with_baseline(tmp_path):
    # The repository root holds memjax/, so it serves as its own baseline: the (before) rows run in a second process.
    out = _run(
        str(BENCHMARKS / "gpu.py"),
        "--quick",
        "--cases",
        "fast_weights",
        "--repeats",
        "1",
        "--baseline",
        str(ROOT),
        "--out-dir",
        str(tmp_path),
        timeout=300,
    )
    assert "| memjax default (before)" in out and "| jax.lax.scan (before process)" in out
    assert "memjax before and after" in out and "Summary (paper:" in out
    text = (tmp_path / "gpu_fast_weights.md").read_text()
    assert "sizes shrunk" in text and "| memjax 5%" in text


def test_dispatch_benchmark_quick_with_baseline():
    # The repository root serves as its own baseline: its memjax is loaded again as memjax_before.
    out = _run(str(BENCHMARKS / "dispatch.py"), "--quick", "--baseline", str(ROOT))
    assert "| memjax default" in out and "| memjax (before) default" in out
    assert re.search(r"\| memjax default .*pipelined, \d+ conditionals", out)
