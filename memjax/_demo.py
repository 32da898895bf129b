"""The command-line demo and planner: ``python -m memjax demo`` and ``python -m memjax plan``.

``demo`` trains a character-level LSTM with optax Adam on the text shipped in ``memjax/data/corpus.txt``, over
sequences of ``length >= 1000`` steps, with :func:`memjax.scan` under a tight memory budget; then it compares one
gradient with ``jax.lax.scan``'s: temp memory (``compiled.memory_analysis()``), time, and the largest difference.

``plan`` solves a policy from the solver alone (no JAX) and prints its cost, its peak memory and an ASCII picture
of its schedule (:func:`ascii_schedule`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from memjax._budget import format_bytes
from memjax._schedule import Op, Schedule
from memjax._solver import KINDS, min_memory, solve

__all__ = ["DemoResult", "run_demo", "plan_report", "ascii_schedule", "parse_units", "load_corpus"]


# -- data ---------------------------------------------------------------------------------------------------------


def load_corpus() -> str:
    """The demo's training text (about 200 KB; see ``memjax/data/SOURCES.txt``)."""
    return (importlib.resources.files("memjax") / "data" / "corpus.txt").read_text(encoding="ascii")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    chars: str

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> np.ndarray:
        table = {c: i for i, c in enumerate(self.chars)}
        return np.array([table[c] for c in text], np.int32)

    def __len__(self) -> int:
        return len(self.chars)


def batches(ids: np.ndarray, length: int, batch: int, rng: np.random.Generator):
    """Endless random windows: ``(inputs, targets)``, both int32 ``(length, batch)`` (time-major)."""
    if ids.size < length + 2:
        raise ValueError(f"length={length} is longer than the corpus ({ids.size} characters).")
    while True:
        starts = rng.integers(0, ids.size - length - 1, size=batch)
        window = np.stack([ids[s : s + length + 1] for s in starts], axis=1)
        yield window[:-1], window[1:]


# -- model --------------------------------------------------------------------------------------------------------


def init_params(key, vocab: int, hidden: int, embed: int) -> dict:
    """A one-layer LSTM language model: embedding, LSTM (forget-gate bias 1), linear read-out."""
    import jax
    import jax.numpy as jnp

    k = jax.random.split(key, 4)
    scale = 1.0 / math.sqrt(hidden)
    uniform = lambda key, shape: jax.random.uniform(key, shape, minval=-scale, maxval=scale)  # noqa: E731
    bias = jnp.zeros((4 * hidden,)).at[hidden : 2 * hidden].set(1.0)
    return {
        "embed": jax.random.normal(k[0], (vocab, embed)) * 0.1,
        "wx": uniform(k[1], (embed, 4 * hidden)),
        "wh": uniform(k[2], (hidden, 4 * hidden)),
        "b": bias,
        "wo": uniform(k[3], (hidden, vocab)),
        "bo": jnp.zeros((vocab,)),
    }


def lstm_step(params, carry, inputs):
    """One character: LSTM step, then the cross-entropy of the next character (the per-step loss)."""
    import jax
    import jax.numpy as jnp

    h, c = carry
    ids, targets = inputs
    x = params["embed"][ids]
    gates = x @ params["wx"] + h @ params["wh"] + params["b"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    logits = h @ params["wo"] + params["bo"]
    picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return (h, c), jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def make_loss(scan: Callable, hidden: int) -> Callable:
    """Mean next-character cross-entropy of a batch ``(inputs, targets)``, the recurrence run by ``scan``."""
    import jax.numpy as jnp

    def loss(params, inputs, targets):
        batch = inputs.shape[1]
        init = (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))
        _, losses = scan(lambda carry, x: lstm_step(params, carry, x), init, (inputs, targets))
        return jnp.mean(losses)

    return loss


# -- progress -----------------------------------------------------------------------------------------------------


class _TextBar:
    """A minimal progress bar for when tqdm is not installed."""

    def __init__(self, total: int, stream=None):
        self.total, self.count, self.postfix = total, 0, ""
        self.stream = stream or sys.stderr

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.count += n
        width = 30
        filled = int(width * self.count / max(self.total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} {self.postfix}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="training", unit="step", dynamic_ncols=True, file=sys.stderr)
    except ImportError:  # pragma: no cover - depends on the environment
        return _TextBar(total)


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
      progress: show a progress bar (tqdm if installed, else a text bar) on stderr.
      sample_length: characters to sample from the trained model and print (0: none).
      out: where the report goes (``sys.stdout`` by default).
    """
    import jax
    import jax.numpy as jnp
    import optax

    import memjax

    out = out or sys.stdout
    text = load_corpus()
    vocab = Vocabulary.of(text)
    ids = vocab.encode(text)
    rng = np.random.default_rng(seed)
    data = batches(ids, length, batch, rng)
    params = init_params(jax.random.PRNGKey(seed), len(vocab), hidden, embed)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    opt_state = optimizer.init(params)

    scan = lambda f, init, xs: memjax.scan(f, init, xs, memory=memory, kind=kind)  # noqa: E731
    loss_fn = make_loss(scan, hidden)
    inputs, targets = next(data)
    plan = memjax.plan_scan(
        lambda c, x: lstm_step(params, c, x),
        (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden))),
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

    @jax.jit
    def train_step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    bar = _progress(steps, progress)
    losses, seconds = [], []
    for index in range(steps):
        if index:
            inputs, targets = next(data)
        start = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, inputs, targets)
        loss = float(loss)
        seconds.append(time.perf_counter() - start)
        losses.append(loss)
        if bar is not None:
            recent = statistics.median(seconds[1:][-20:]) if len(seconds) > 1 else seconds[0]
            bar.set_postfix_str(f"loss {loss:.3f}, {recent * 1e3:.0f} ms/step")
            bar.update(1)
    if bar is not None:
        bar.close()
    head, tail = losses[: max(1, steps // 10)], losses[-max(1, steps // 10) :]
    print(
        f"loss {statistics.mean(head):.3f} -> {statistics.mean(tail):.3f} nats/char over {steps} steps "
        f"(uniform guess: {math.log(len(vocab)):.3f}); median step {statistics.median(seconds[1:] or seconds):.3f} s",
        file=out,
        flush=True,
    )

    sample = ""
    if sample_length > 0:
        sample = sample_text(params, vocab, "The ", sample_length, jax.random.PRNGKey(seed + 1))
        print(f"sample (temperature 0.7): {sample!r}", file=out, flush=True)
    rows, difference, table = {}, math.nan, ""
    if compare:
        rows, difference = _compare(params, inputs, targets, hidden, memory, kind, repeats)
        table = _demo_table(rows, difference)
        print("\n" + table, file=out, flush=True)
    return DemoResult(losses, seconds, table, rows, difference, sample)


def sample_text(params, vocab: Vocabulary, prompt: str, length: int, key, temperature: float = 0.7) -> str:
    """``prompt`` followed by ``length`` characters sampled from the model (a forward ``lax.scan``, no gradient)."""
    import jax
    import jax.numpy as jnp

    hidden = params["wh"].shape[0]
    state = (jnp.zeros((1, hidden)), jnp.zeros((1, hidden)))
    ids = jnp.asarray(vocab.encode(prompt))[:, None]

    def read(state, x):  # the prompt: feed characters, ignore the loss
        state, _ = lstm_step(params, state, (x, x))
        return state, None

    state, _ = jax.lax.scan(read, state, ids[:-1])

    def write(carry, key):  # feed the previous character, sample the next
        state, previous = carry
        state, _ = lstm_step(params, state, (previous, previous))
        logits = state[0] @ params["wo"] + params["bo"]
        nxt = jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)
        return (state, nxt), nxt[0]

    _, out = jax.lax.scan(write, (state, ids[-1]), jax.random.split(key, length))
    return prompt + "".join(vocab.chars[i] for i in np.asarray(out))


def _compare(params, inputs, targets, hidden, memory, kind, repeats):
    """Temp memory, median gradient time (interleaved) and the gradient difference of memjax vs lax.scan."""
    import jax

    import memjax

    methods = {
        "jax.lax.scan": (jax.lax.scan, 1.0),
        f"memjax.scan ({kind}, {memory})": (
            lambda f, init, xs: memjax.scan(f, init, xs, memory=memory, kind=kind),
            None,
        ),
    }
    compiled, rows = {}, {}
    for name, (scan, forwards) in methods.items():
        fn = jax.jit(jax.value_and_grad(make_loss(scan, hidden)))
        executable = fn.lower(params, inputs, targets).compile()
        analysis = executable.memory_analysis()
        compiled[name] = executable
        rows[name] = {
            "temp_bytes": None if analysis is None else int(analysis.temp_size_in_bytes),
            "seconds": [],
            "forwards_per_step": forwards,
        }
    kind_name = next(iter(methods.keys() - {"jax.lax.scan"}))
    batch = inputs.shape[1]
    import jax.numpy as jnp

    plan = memjax.plan_scan(
        lambda c, x: lstm_step(params, c, x),
        (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden))),
        (inputs, targets),
        memory=memory,
        kind=kind,
    )
    rows[kind_name]["forwards_per_step"] = plan.forward_count / plan.length
    grads = {
        name: jax.block_until_ready(executable(params, inputs, targets))[1] for name, executable in compiled.items()
    }  # also the warm-up run
    difference = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree_util.tree_leaves(grads["jax.lax.scan"]), jax.tree_util.tree_leaves(grads[kind_name]))
    )
    names = list(compiled)
    for round_ in range(repeats):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
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


# -- plan ---------------------------------------------------------------------------------------------------------


def parse_units(memory: str, length: int, alpha: float) -> float:
    """Memory in hidden-state units: ``"40"`` is 40 units, ``"5%"`` is 5% of store-all, ``1 + (t - 1) alpha``."""
    text = str(memory).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100 * (1 + (length - 1) * alpha)
        else:
            value = float(text)
    except ValueError:
        raise ValueError(
            f"memory={memory!r}: give units of one hidden state (e.g. '40') or a percentage of store-all (e.g. '5%')."
        ) from None
    if not value > 0:
        raise ValueError(f"memory={memory!r} must be positive.")
    return value


def plan_report(
    length: int, memory: str, alpha: float = 1.0, kind: str = "msm", width: int = 72, height: int = 20, actions: int = 0
) -> str:
    """The text that ``python -m memjax plan`` prints: policy, cost, peak memory and an ASCII schedule."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a policy kind; use one of {', '.join(KINDS)}.")
    store_all = 1 + (length - 1) * alpha
    units = parse_units(memory, length, alpha)
    start = time.perf_counter()
    policy = solve(length, units, alpha=alpha, kind=kind)
    schedule = policy.schedule()
    seconds = time.perf_counter() - start
    lines = [
        f"memjax plan: t = {length} steps, alpha = {alpha:g} (an internal state is {alpha:g} hidden-state units)",
        f"  policy         {kind}, memory {units:g} units ({units / store_all:.2%} of store-all = {store_all:g} units)",
        f"  cost           {policy.cost} forward evaluations = {policy.forwards_per_step:.3f} forwards per "
        f"step (store-all: 1.000; recompute-all: {(length + 1) / 2:g})",
        f"  peak memory    {schedule.peak_memory:g} units ({schedule.peak_memory / store_all:.2%} of "
        f"store-all): {schedule.hidden_slots} hidden + {schedule.internal_slots} internal states at most, "
        "plus the initial state",
        f"  schedule       {len(schedule)} actions, solved in {seconds:.2f} s",
    ]
    if kind not in ("store_all", "recompute"):
        others = []
        for other in ("msm", "hsm", "chen"):
            if other == kind or (other == "msm" and length > 3000):  # keep the report quick
                continue
            try:
                others.append(
                    f"{other} {solve(length, units, alpha=alpha, kind=other).forwards_per_step:.3f} forwards per step"
                )
            except ValueError:
                others.append(f"{other} needs more memory")
        if others:
            lines.append("  same memory    " + "; ".join(others))
        try:
            least = min_memory(length, 2 * length, alpha=alpha, kind=kind)
            lines.append(f"  2 fwd/step     needs {least:g} units ({least / store_all:.2%} of store-all) with {kind}")
        except ValueError:
            pass
    lines.append("")
    lines.append(ascii_schedule(schedule, width=width, height=height))
    if actions:
        lines.append("")
        lines.append(schedule.describe(max_actions=actions))
    return "\n".join(lines)


def ascii_schedule(schedule: Schedule, width: int = 72, height: int = 20) -> str:
    """A coarse picture of a schedule: time runs down (rows), positions 0..t run across (columns).

    Time counts forward evaluations and backward steps. In each cell the strongest mark wins: ``x`` a step was
    back-propagated there, ``#`` an internal state is held, ``o`` a hidden state is held, ``-`` forward steps
    were (re)computed there, ``.`` already back-propagated.
    """
    t = schedule.length
    columns = max(1, min(width, t))
    total = schedule.forward_count + t
    rows = max(1, min(height, total))
    grid = np.zeros((rows, columns), np.int8)  # 0 blank, 1 '.', 2 '-', 3 'o', 4 '#', 5 'x'
    marks = " .-o#x"

    def column(position: int) -> int:  # position k in 1..t (step k), 0 for the initial state
        return min(columns - 1, max(0, (position - 1) * columns // t))

    def row(clock: int) -> int:
        return min(rows - 1, clock * rows // total)

    def mark(r: int, c0: int, c1: int, value: int) -> None:
        grid[r, c0 : c1 + 1] = np.maximum(grid[r, c0 : c1 + 1], value)

    clock = 0
    held: dict[int, tuple[int, int, int]] = {}  # offset -> (position, mark, clock saved)
    spans = []  # (position, mark, clock from, clock to)
    done = []  # (position, clock)

    def forward(a: int, b: int) -> None:  # steps a+1..b, one clock tick each
        nonlocal clock
        k = a
        while k < b:
            r = row(clock)
            end_clock = -(-(r + 1) * total // rows)  # the first clock of the next row
            n = max(1, min(b - k, end_clock - clock))
            mark(r, column(k + 1), column(k + n), 2)
            k += n
            clock += n

    for op, a, b, off in zip(schedule.op, schedule.start, schedule.stop, schedule.offset):
        op, a, b, off = int(op), int(a), int(b), int(off)
        if op == Op.ADVANCE:
            forward(a, b)
        elif op == Op.SAVE_HIDDEN:
            held[off] = (a, 3, clock)
        elif op == Op.SAVE_INTERNAL:
            forward(a, a + 1)
            held[off] = (a + 1, 4, clock)
        elif op == Op.BACKWARD:
            forward(a, a + 1)
            done.append((a + 1, clock))
            clock += 1
        elif op == Op.BACKWARD_STORED:
            done.append((a, clock))
            clock += 1
        elif op == Op.FREE and off in held:
            position, value, since = held.pop(off)
            spans.append((position, value, since, clock))
    for position, value, since in held.values():
        spans.append((position, value, since, clock))
    for position, value, since, until in spans:
        for r in range(row(since), row(max(since, until - 1)) + 1):
            mark(r, column(position), column(position), value)
    last_done = np.full(columns, -1, np.int64)  # the last row in which each column saw a backward step
    for position, when in done:
        r, c = row(when), column(position)
        mark(r, c, c, 5)
        last_done[c] = max(last_done[c], r)
    for c in range(columns):  # '.' once every step of the column has been back-propagated
        if 0 <= last_done[c] < rows - 1:
            grid[last_done[c] + 1 :, c] = np.maximum(grid[last_done[c] + 1 :, c], 1)

    per_column = t / columns
    pad = max(4, len(str(total)))
    axis = "1" + "position".center(max(columns - 1 - len(str(t)), 0)) + str(t) if columns > 12 else "1..t"
    lines = [
        f"schedule picture: {rows} rows of ~{total / rows:.3g} time units (forward evaluations + backward "
        f"steps), {columns} columns of ~{per_column:.3g} positions",
        f"{'time':>{pad}} |{axis}",
        f"{'':>{pad}} +" + "-" * columns,
    ]
    for r in range(rows):
        lines.append(f"{r * total // rows:>{pad}} |" + "".join(marks[v] for v in grid[r]).rstrip())
    lines.append(
        "legend: '-' forward (re)computation, 'o' hidden state held, '#' internal state held, "
        "'x' back-propagated, '.' done"
    )
    return "\n".join(lines)
