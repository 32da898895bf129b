"""``memjax.flax.nnx_scan``: an NNX module scanned with :func:`memjax.scan` (public through :mod:`memjax.flax`)."""

from __future__ import annotations

from collections.abc import Callable

from memjax._flax_linen import _flax
from memjax._scan import scan as _memjax_scan

__all__ = ["nnx_scan"]


def _call(module, carry, x):
    return module(carry, x)


def nnx_scan(
    module,
    init,
    xs=None,
    length: int | None = None,
    reverse: bool = False,
    unroll: int = 1,
    *,
    fn: Callable = _call,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
):
    """Scan an NNX module over ``xs`` with :func:`memjax.scan`: ``carry, y = fn(module, carry, x)`` per step.

    The module's graph and state are split for you (``nnx.split``): parameters (``nnx.Param``) and RNG keys are
    closed over, so gradients reach the parameters (``nnx.grad`` of a loss that calls this works as usual);
    every other variable (RNG counters, batch statistics, ...) travels in the carry and is written back to
    ``module`` at the end, as after the same Python loop. ``fn`` defaults to ``module(carry, x)``, the
    convention of ``nnx.LSTMCell``, ``nnx.GRUCell`` and ``nnx.SimpleCell``.

    Semantically::

      def nnx_scan(module, init, xs, fn=lambda m, c, x: m(c, x)):
        carry, ys = init, []
        for x in xs:
          carry, y = fn(module, carry, x)
          ys.append(y)
        return carry, stack(ys)

    Example::

      cell = nnx.LSTMCell(8, 32, rngs=nnx.Rngs(0))

      def loss(cell, xs):
        carry = cell.initialize_carry(xs.shape[1:2] + (8,), nnx.Rngs(1))
        _, ys = memjax.flax.nnx_scan(cell, carry, xs, memory="10%")
        return (ys ** 2).mean()

      grads = nnx.grad(loss)(cell, xs)   # equals the gradient through nnx.scan / a Python loop

    Args:
      module: an NNX module (or any NNX graph node, e.g. a tuple of modules).
      init, xs, length, reverse, unroll: as in ``jax.lax.scan``.
      fn: the step, ``fn(module, carry, x) -> (carry, y)``.
      memory, kind, checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      ``(carry, ys)``.

    Raises:
      TypeError: from :func:`memjax.scan` if a step changes the structure of the module's state (e.g. ``sow``
        into ``nnx.Intermediate`` adds a variable per step): keep such outputs in ``y`` instead.
    """
    from flax import nnx

    body, rest = _nnx_step(module, fn)
    (rest, carry), ys = _memjax_scan(
        body,
        (rest, init),
        xs,
        length=length,
        reverse=reverse,
        unroll=unroll,
        memory=memory,
        kind=kind,
        checkpoint_policy=checkpoint_policy,
    )
    nnx.update(module, rest)
    return carry, ys


def _nnx_step(module, fn: Callable):
    """The step :func:`nnx_scan` runs, ``((rest, carry), x) -> ((rest, carry), y)``, and the module's ``rest``: its
    variables other than parameters and RNG keys (those are closed over)."""
    _flax()
    from flax import nnx

    graphdef, params, keys, rest = nnx.split(module, nnx.Param, nnx.RngKey, ...)

    def body(carry, x):
        rest_in, c = carry
        m = nnx.merge(graphdef, params, keys, rest_in)
        c, y = fn(m, c, x)
        _, _, _, rest_out = nnx.split(m, nnx.Param, nnx.RngKey, ...)
        return (rest_out, c), y

    return body, rest
