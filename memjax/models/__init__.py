"""Recurrent models written in plain JAX (no framework): pure functions of explicit parameters, each a
``jax.lax.scan`` body once its parameters are bound, so that one definition serves :func:`memjax.scan`, the demo,
the benchmarks and the tests.

* :mod:`memjax.models.lstm`: the LSTM of the paper's experiments (four gates, gate pre-activations named
  ``"gates"`` for ``save_only_these_names``).
* :mod:`memjax.models.gru`: a GRU in PyTorch's convention.
* :mod:`memjax.models.fast_weights`: the fast-weights RNN of Ba et al. (2016), whose state holds an ``H x H``
  matrix per sequence, with the associative-retrieval task it was introduced on.

They import JAX, and memjax only where a function runs :func:`memjax.scan` itself (``fast_weights.unroll``).
"""

from memjax.models import fast_weights, gru, lstm

__all__ = ["fast_weights", "gru", "lstm"]
