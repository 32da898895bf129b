"""``python -m memjax demo``: a character-level LSTM trained with :func:`memjax.scan` under a memory budget, then
one gradient compared with ``jax.lax.scan``'s.

The model is :mod:`memjax.models.lstm` between a character embedding and a linear read-out, over sequences of
``length >= 1000`` characters of the text shipped in ``memjax/data/corpus.txt``; the loss of each step (the
cross-entropy of the next character) is computed inside the scan body. Training is memjax's own loop
(:func:`memjax._train.train`, optax Adam with gradient clipping), each batch a pure function of the step number.
The comparison compiles ``jit(value_and_grad(loss))`` once with each scan and reports its temp memory
(``compiled.memory_analysis()``), its time (runs interleaved) and the largest difference of the two gradients.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax._budget import format_bytes
from memjax._scan import plan_scan
from memjax._scan import scan as memjax_scan
from memjax._train import init_train_state, train
from memjax.models import lstm

__all__ = ["DemoResult", "run_demo", "load_corpus", "Vocabulary", "windows", "init_params", "char_step"]


# -- data ---------------------------------------------------------------------------------------------------------


def load_corpus() -> str:
    """The demo's training text (about 200 KB; see ``memjax/data/SOURCES.txt``)."""
    return (importlib.resources.files("memjax") / "data" / "corpus.txt").read_text(encoding="ascii")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters of a text, each encoded as its index in ``chars``."""

    chars: str

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> np.ndarray:
        table = {c: i for i, c in enumerate(self.chars)}
        return np.array([table[c] for c in text], np.int32)

    def __len__(self) -> int:
        return len(self.chars)


def windows(ids: np.ndarray, length: int, batch: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of training step ``step``: ``batch`` random windows of ``ids``, a pure function of ``seed`` and
    ``step`` (so that a resumed run sees the same batches).

    Returns:
      ``(inputs, targets)``, both int32 ``[length, batch]`` (time-major), ``targets`` one character ahead.
    """
    if ids.size < length + 2:
        raise ValueError(f"length={length} is longer than the corpus ({ids.size} characters).")
    starts = np.random.default_rng((seed, step)).integers(0, ids.size - length - 1, size=batch)
    window = np.stack([ids[s : s + length + 1] for s in starts], axis=1)
    return window[:-1], window[1:]


# -- model --------------------------------------------------------------------------------------------------------


def init_params(key: jax.Array, vocab: int, hidden: int, embed: int) -> dict:
    """A one-layer LSTM language model.

    Args:
      key: a PRNG key.
      vocab: characters in the vocabulary.
      hidden: LSTM units.
      embed: size of a character's embedding.

    Returns:
      ``{"embed": [vocab, embed], "lstm": memjax.models.lstm parameters (forget-gate bias 1),
      "wo": [hidden, vocab], "bo": [vocab]}``.
    """
    k_embed, k_lstm, k_out = jax.random.split(key, 3)
    scale = 1.0 / math.sqrt(hidden)
    return {
        "embed": jax.random.normal(k_embed, (vocab, embed)) * 0.1,
        "lstm": lstm.init_params(k_lstm, embed, hidden, forget_bias=1.0),
        "wo": jax.random.uniform(k_out, (hidden, vocab), minval=-scale, maxval=scale),
        "bo": jnp.zeros((vocab,)),
    }


def logits(params: dict, h: jax.Array) -> jax.Array:
    """The read-out: next-character logits ``[B, vocab]`` of the hidden state ``h``."""
    return h @ params["wo"] + params["bo"]


def char_step(params: dict, carry, inputs) -> tuple[tuple, jax.Array]:
    """One character, the scan body: the LSTM step on its embedding, then the per-step loss.

    Args:
      params: from :func:`init_params`.
      carry: the LSTM's ``(h, c)``.
      inputs: ``(ids, targets)``, int32 ``[B]`` each.

    Returns:
      ``((h, c), loss)``: the next carry, and the mean cross-entropy of the next character (nats).
    """
    ids, targets = inputs
    carry, h = lstm.step(params["lstm"], carry, params["embed"][ids])
    z = logits(params, h)
    picked = jnp.take_along_axis(z, targets[:, None], axis=-1)[:, 0]
    return carry, jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)


def make_loss(scan: Callable) -> Callable:
    """``loss(params, inputs, targets)``: the mean next-character cross-entropy, the recurrence run by ``scan``."""

    def loss(params, inputs, targets):
        init = lstm.initial_carry(inputs.shape[1], params["lstm"]["U"].shape[0])
        _, losses = scan(lambda carry, x: char_step(params, carry, x), init, (inputs, targets))
        return jnp.mean(losses)

    return loss


def sample_text(params: dict, vocab: Vocabulary, prompt: str, length: int, key, temperature: float = 0.7) -> str:
    """``prompt`` followed by ``length`` characters sampled from the model (a forward ``lax.scan``, no gradient)."""
    carry = lstm.initial_carry(1, params["lstm"]["U"].shape[0])
    ids = jnp.asarray(vocab.encode(prompt))[:, None]

    def read(carry, x):  # the prompt, all but its last character
        carry, _ = lstm.step(params["lstm"], carry, params["embed"][x])
        return carry, None

    def write(state, key):  # feed the previous character, sample the next
        carry, previous = state
        carry, h = lstm.step(params["lstm"], carry, params["embed"][previous])
        following = jax.random.categorical(key, logits(params, h) / temperature, axis=-1).astype(jnp.int32)
        return (carry, following), following[0]

    carry, _ = jax.lax.scan(read, carry, ids[:-1])
    _, out = jax.lax.scan(write, (carry, ids[-1]), jax.random.split(key, length))
    return prompt + "".join(vocab.chars[i] for i in np.asarray(out))


# -- demo ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes:
      losses: training loss of every step (nats per character).
      step_seconds: wall time of every training step (the first includes compilation).
      table: the final markdown table (also printed).
      rows: the table's numbers: ``{method: {"temp_bytes", "seconds", "forwards_per_step"}}``.
      max_grad_difference: largest absolute difference between memjax's and lax.scan's gradient on one batch.
      sample: text sampled from the trained model (empty when ``sample_length`` is 0).
    """

    losses: list
    step_seconds: list
    table: str
    rows: dict
    max_grad_difference: float
    sample: str = ""


def run_demo(
    length: int = 1000,
    memory="5%",
    kind: str = "msm",
    steps: int = 150,
    batch: int = 16,
    hidden: int = 128,
    embed: int = 32,
    learning_rate: float = 1e-2,
    seed: int = 0,
    compare: bool = True,
    repeats: int = 3,
    progress: bool = True,
    sample_length: int = 160,
    out=None,
) -> DemoResult:
    """Train a character-level LSTM with :func:`memjax.scan` under ``memory`` and compare with ``jax.lax.scan``.

    Args:
      length: characters per training sequence (scan steps).
      memory: memjax's budget (``"5%"``, ``"16MiB"``, bytes, or ``None`` for two forwards per step).
      kind: memjax's policy kind.
      steps, batch, hidden, embed, learning_rate, seed: training set-up (optax Adam, gradient clipping 1).
      compare: after training, measure one gradient of memjax and of ``jax.lax.scan`` (interleaved ``repeats``
        times) and print the table.
      repeats: timed gradients per method in the comparison.
      progress: show a progress bar on stderr.
      sample_length: characters to sample from the trained model and print (0: none).
      out: where the report goes (``sys.stdout`` by default).

    Returns:
      The measurements, a :class:`DemoResult`.
    """
    out = out or sys.stdout
    text = load_corpus()
    vocab = Vocabulary.of(text)
    ids = vocab.encode(text)

    def batch_at(step: int):
        return windows(ids, length, batch, seed, step)

    params = init_params(jax.random.key(seed), len(vocab), hidden, embed)
    inputs, targets = batch_at(0)
    plan = plan_scan(
        lambda c, x: char_step(params, c, x),
        lstm.initial_carry(batch, hidden),
        (jnp.asarray(inputs), jnp.asarray(targets)),
        memory=memory,
        kind=kind,
    )
    print(
        f"memjax demo: character-level LSTM on {len(text):,} characters ({len(vocab)} symbols), "
        f"sequences of {length} steps, batch {batch}, {hidden} units",
        file=out,
    )
    print(
        f"memjax.scan(kind={kind!r}, memory={memory!r}): budget {format_bytes(plan.budget_bytes)} of "
        f"{format_bytes(plan.store_all_bytes)} that lax.scan stores; {plan.forward_count / length:.3f} forwards "
        f"per step (alpha = {plan.sizes.alpha:.3g})",
        file=out,
        flush=True,
    )

    def scan(f, init, xs):
        return memjax_scan(f, init, xs, memory=memory, kind=kind)

    loss = make_loss(scan)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    state = init_train_state(params, optimizer, jax.random.key(seed))
    seconds: list[float] = []
    bar = _ProgressBar(steps) if progress else None
    last = time.perf_counter()

    def on_step(step: int, record: dict) -> None:  # train() has made record's numbers host floats: steps are done
        nonlocal last
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
        if bar is not None:
            recent = statistics.median(seconds[1:][-20:]) if len(seconds) > 1 else seconds[0]
            bar.show(step, f"loss {record['loss']:.3f}, {recent * 1e3:.0f} ms/step")

    state, history = train(lambda p, b, _: loss(p, *b), optimizer, state, batch_at, steps, callback=on_step)
    if bar is not None:
        bar.close()
    params, losses = state.params, [record["loss"] for record in history]
    head, tail = losses[: max(1, steps // 10)], losses[-max(1, steps // 10) :]
    print(
        f"loss {statistics.mean(head):.3f} -> {statistics.mean(tail):.3f} nats/char over {steps} steps "
        f"(uniform guess: {math.log(len(vocab)):.3f}); median step {statistics.median(seconds[1:] or seconds):.3f} s",
        file=out,
        flush=True,
    )

    sample = ""
    if sample_length > 0:
        sample = sample_text(params, vocab, "The ", sample_length, jax.random.key(seed + 1))
        print(f"sample (temperature 0.7): {sample!r}", file=out, flush=True)
    rows, difference, table = {}, math.nan, ""
    if compare:
        methods = {
            "jax.lax.scan": (make_loss(jax.lax.scan), 1.0),
            f"memjax.scan ({kind}, {memory})": (loss, plan.forward_count / plan.length),
        }
        inputs, targets = batch_at(max(steps - 1, 0))
        rows, difference = _compare(methods, params, inputs, targets, repeats)
        table = _demo_table(rows, difference)
        print("\n" + table, file=out, flush=True)
    return DemoResult(losses, seconds, table, rows, difference, sample)


class _ProgressBar:
    """One line on stderr, redrawn in place: ``[####......] step/total text``."""

    def __init__(self, total: int, width: int = 30, stream=None):
        self.total, self.width, self.stream = total, width, stream or sys.stderr
        self.drawn = 0  # characters of the line last drawn, blanked where the new line is shorter

    def show(self, count: int, text: str) -> None:
        filled = self.width * count // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {count}/{self.total} {text}"
        self.stream.write("\r" + line.ljust(self.drawn))
        self.stream.flush()
        self.drawn = len(line)

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _compare(methods: dict, params, inputs, targets, repeats: int) -> tuple[dict, float]:
    """Temp memory, gradient times (interleaved) and the largest gradient difference of each method against the
    first, ``methods`` being ``{name: (loss, forwards per step)}``."""
    compiled, rows = {}, {}
    for name, (loss, forwards) in methods.items():
        executable = jax.jit(jax.value_and_grad(loss)).lower(params, inputs, targets).compile()
        analysis = executable.memory_analysis()
        compiled[name] = executable
        rows[name] = {
            "temp_bytes": None if analysis is None else int(analysis.temp_size_in_bytes),
            "seconds": [],
            "forwards_per_step": forwards,
        }
    grads = [jax.block_until_ready(executable(params, inputs, targets))[1] for executable in compiled.values()]
    difference = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for other in grads[1:]
        for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(other))
    )
    names = list(compiled)
    for round_ in range(repeats):  # each round starts with the next method, so that neither always runs first
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](params, inputs, targets))
            rows[name]["seconds"].append(time.perf_counter() - start)
    return rows, difference


def _demo_table(rows: dict, difference: float) -> str:
    reference = rows["jax.lax.scan"]
    lines = [
        "| method | temp memory | memory vs lax.scan | gradient time (median) | time vs lax.scan | forwards/step |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for name, row in rows.items():
        temp = row["temp_bytes"]
        seconds = statistics.median(row["seconds"]) if row["seconds"] else math.nan
        ref_seconds = statistics.median(reference["seconds"]) if reference["seconds"] else math.nan
        memory_ratio = (temp / reference["temp_bytes"]) if temp and reference["temp_bytes"] else math.nan
        lines.append(
            f"| {name} | {format_bytes(temp) if temp is not None else '—'} | {memory_ratio:.3f} | "
            f"{seconds * 1e3:.1f} ms | {seconds / ref_seconds:.2f} | {row['forwards_per_step']:.3f} |"
        )
    lines.append("")
    lines.append(f"max |grad memjax - grad lax.scan| on one batch: {difference:.2e}")
    lines.append(
        "temp memory: compiled.memory_analysis().temp_size_in_bytes of jit(value_and_grad(loss)); "
        f"times: median of {len(reference['seconds'])} interleaved runs."
    )
    return "\n".join(lines)
