"""Learn addition ("57+368" -> "425") with an LSTM encoder-decoder, its recurrences run by ``memjax.flax.RNN``.

The model and the task are those of Flax's seq2seq example (github.com/google/flax, examples/seq2seq), written
anew: characters are one-hot; the encoder reads the query up to its end-of-sequence token (``seq_lengths``)
and hands its carry to the decoder, which is trained with teacher forcing and samples a token per step from
the ``"lstm"`` random stream. Where that example has ``nn.RNN``, this one has ``memjax.flax.RNN``
(``use_memjax=False`` switches back): the parameter trees are the same, and so are the losses.

  python3 examples/seq2seq.py    # trains both from one initialization on the same batches, prints both losses
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import memjax.flax

PAD, EOS = 0, 1
CHARS = "+0123456789="  # token i + 2 is CHARS[i]; 0 and 1 are PAD and EOS


def max_input_length(digits: int) -> int:
    return 2 * digits + 2  # "a+b" and EOS


def max_output_length(digits: int) -> int:
    return digits + 3  # "=", the sum (one digit longer than b at most) and EOS


def one_hot(strings, length: int) -> np.ndarray:
    """``[len(strings), length, vocabulary]`` one-hot tokens, each string followed by EOS and padded with PAD."""
    tokens = np.full((len(strings), length), PAD)
    for row, string in enumerate(strings):
        if len(string) + 1 > length:
            raise ValueError(f"{string!r} and its EOS need {len(string) + 1} steps, more than {length}.")
        tokens[row, : len(string) + 1] = [CHARS.index(c) + 2 for c in string] + [EOS]
    return np.eye(len(CHARS) + 2, dtype=np.float32)[tokens]


def batches(count: int, batch_size: int, digits: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``{"query": "a+b", "answer": "=sum"}``: one number below 100, one below
    ``10**digits``, the smaller first (Flax's draw)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pairs = [sorted((int(rng.integers(100)), int(rng.integers(10**digits)))) for _ in range(batch_size)]
        out.append(
            {
                "query": one_hot([f"{a}+{b}" for a, b in pairs], max_input_length(digits)),
                "answer": one_hot([f"={a + b}" for a, b in pairs], max_output_length(digits)),
            }
        )
    return out


def sequence_lengths(one_hot_tokens: jax.Array) -> jax.Array:
    """The steps up to and including the first EOS; all of them if there is none."""
    is_eos = one_hot_tokens[..., EOS] > 0
    return jnp.where(is_eos.any(-1), jnp.argmax(is_eos, -1) + 1, is_eos.shape[-1])


class DecoderCell(nn.RNNCellBase):
    """An LSTM step, a projection to the vocabulary and a sampled token; the carry is ``(lstm, last token)``."""

    features: int
    vocab_size: int
    teacher_force: bool = True

    @nn.compact
    def __call__(self, carry, x):
        lstm, last = carry
        lstm, h = nn.LSTMCell(self.features)(lstm, x if self.teacher_force else last)
        logits = nn.Dense(self.vocab_size)(h)
        token = jax.nn.one_hot(jax.random.categorical(self.make_rng("lstm"), logits), self.vocab_size)
        return (lstm, token), (logits, token)

    @property
    def num_feature_axes(self) -> int:
        return 1


class Seq2seq(nn.Module):
    """Encoder and decoder LSTMs; ``use_memjax`` picks ``memjax.flax.RNN`` (within ``memory``) or ``nn.RNN``."""

    hidden_size: int
    vocab_size: int = len(CHARS) + 2
    teacher_force: bool = True
    use_memjax: bool = True
    memory: Any = "10%"

    def rnn(self, cell, **fields):
        if self.use_memjax:
            return memjax.flax.RNN(cell, memory=self.memory, **fields)
        return nn.RNN(cell, **fields)

    @nn.compact
    def __call__(self, query, answer):
        """``(logits, tokens)`` for the answer's steps after "=", each ``[batch, steps - 1, vocabulary]``."""
        encoder = self.rnn(nn.LSTMCell(self.hidden_size), return_carry=True, name="encoder")
        decoder = self.rnn(
            DecoderCell(self.hidden_size, self.vocab_size, self.teacher_force),
            split_rngs={"params": False, "lstm": True},
            name="decoder",
        )
        # The encoder's carry is the one before it reads EOS, as in Flax's example.
        state, _ = encoder(query, seq_lengths=jnp.argmax(query[..., EOS] > 0, -1))
        return decoder(answer[:, :-1], initial_carry=(state, answer[:, 0]))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The mean over batch and steps of the cross-entropy, padding after EOS counted as zeros (as Flax's)."""
    valid = jnp.arange(labels.shape[1]) < sequence_lengths(labels)[:, None]
    return -jnp.mean(jnp.sum(nn.log_softmax(logits) * labels, -1) * valid)


def train(model: Seq2seq, params, data, learning_rate: float = 3e-3, seed: int = 0) -> list[float]:
    """The losses of ``len(data)`` Adam steps from ``params``; step ``i`` samples with ``fold_in(key, i)``."""
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, batch, index):
        def loss(params):
            logits, _ = model.apply(
                {"params": params},
                batch["query"],
                batch["answer"],
                rngs={"lstm": jax.random.fold_in(jax.random.key(seed), index)},
            )
            return cross_entropy(logits, batch["answer"][:, 1:])

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state, losses = optimizer.init(params), []
    for index, batch in enumerate(data):
        params, opt_state, value = step(params, opt_state, batch, index)
        losses.append(float(value))
    return losses


def train_both(
    steps: int = 30, batch_size: int = 64, hidden_size: int = 64, digits: int = 3, memory: Any = "10%", seed: int = 0
) -> tuple[list[float], list[float]]:
    """Train with ``memjax.flax.RNN`` and with ``nn.RNN`` from one initialization on the same batches.

    Returns:
      ``(memjax_losses, flax_losses)``, ``steps`` each.
    """
    data = batches(steps, batch_size, digits, seed)
    memjax_model = Seq2seq(hidden_size, memory=memory)
    flax_model = Seq2seq(hidden_size, use_memjax=False)
    keys = {"params": jax.random.key(seed), "lstm": jax.random.key(seed + 1)}
    params = flax_model.init(keys, data[0]["query"], data[0]["answer"])["params"]
    return train(memjax_model, params, data, seed=seed), train(flax_model, params, data, seed=seed)


def main() -> None:
    ours, theirs = train_both()
    print(f"{'step':>4}  {'memjax.flax.RNN':>15}  {'nn.RNN':>10}  {'difference':>10}")
    for index, (a, b) in enumerate(zip(ours, theirs)):
        print(f"{index:>4}  {a:>15.6f}  {b:>10.6f}  {a - b:>10.1e}")


if __name__ == "__main__":
    main()
