"""Recurrent models written in plain JAX (no framework), sized to show what :func:`memjax.scan` buys.

* :mod:`memjax.models.fast_weights`: the fast-weights RNN of Ba et al. (2016), whose state holds an ``H x H``
  matrix per sequence, with the associative-retrieval task it was introduced on.
"""

from memjax.models import fast_weights

__all__ = ["fast_weights"]
