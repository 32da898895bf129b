"""Flax adapters: :func:`scan` for Linen (a drop-in for ``flax.linen.scan``) and :func:`nnx_scan` for NNX.

Both run the recurrence with :func:`memjax.scan`, so that the gradient stores at most ``memory`` bytes of
hidden and internal states and recomputes the rest along the optimal schedule of ``kind`` (Gruslys et al.,
NeurIPS 2016). Values and gradients are those of ``nn.scan`` / ``nnx.scan``.

Linen::

  import flax.linen as nn
  import memjax.flax

  LSTM = memjax.flax.scan(nn.LSTMCell, variable_broadcast="params", split_rngs={"params": False},
                          in_axes=1, out_axes=1, memory="10%")
  # exactly where nn.scan(nn.LSTMCell, ...) would go; the parameter tree is the same.

NNX::

  cell = nnx.LSTMCell(8, 32, rngs=nnx.Rngs(0))
  carry, ys = memjax.flax.nnx_scan(cell, carry, xs, memory="10%")   # ys[t] = cell(carry, xs[t])[1]

Flax is imported lazily: ``import memjax.flax`` works without it, and the first call raises an ``ImportError``
that says to ``pip install memjax[flax]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import jax
import numpy as np

from memjax._scan import scan as _memjax_scan

__all__ = ["scan", "nnx_scan", "explain", "RNN", "NNXRNN"]  # noqa: F822 (RNN, NNXRNN: from __getattr__)


def _flax():
    try:
        import flax  # noqa: F401  (the real package: this module is memjax.flax)
        from flax.core import axes_scan, lift, meta, scope  # noqa: F401
    except ImportError as error:  # pragma: no cover - exercised only without flax
        raise ImportError("memjax.flax needs Flax: pip install memjax[flax] (or pip install flax>=0.12).") from error
    return lift, axes_scan, meta, scope


# ---------------------------------------------------------------------------------------------------------------
# Linen
# ---------------------------------------------------------------------------------------------------------------


def scan(
    target,
    variable_axes: Mapping = {},
    variable_broadcast=False,
    variable_carry=False,
    split_rngs: Mapping = {},
    in_axes=0,
    out_axes=0,
    length: int | None = None,
    reverse: bool = False,
    unroll: int = 1,
    data_transform: Callable | None = None,
    metadata_params: Mapping = {},
    methods=None,
    check_constancy_invariants: bool = True,
    *,
    memory=None,
    kind: str = "msm",
    checkpoint_policy=None,
):
    """``flax.linen.scan`` whose gradient runs :func:`memjax.scan`'s schedule within ``memory``.

    Takes every argument of ``nn.scan`` with the same meaning and returns the same kind of object: a module
    class when ``target`` is a module class (``memjax.flax.scan(nn.LSTMCell, ...)``), a method decorator when
    it is a method. The lifted class has the same name (``ScanLSTMCell``) and parameter tree as ``nn.scan``'s,
    so parameters move freely between the two.

    Example::

      class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):                    # xs: [batch, time, features]
          lstm = memjax.flax.scan(nn.LSTMCell, variable_broadcast="params", split_rngs={"params": False},
                                  in_axes=1, out_axes=1, memory="5%")(features=64)
          carry = lstm.initialize_carry(jax.random.key(0), xs[:, 0].shape)
          return lstm(carry, xs)[1]

    What runs:

    * ``init`` (or any call where the broadcast collections or ``"params"`` are mutable) is ``nn.scan``
      itself: variables are created exactly as ``nn.scan`` creates them.
    * Otherwise the loop is :func:`memjax.scan`: broadcast variables (the parameters) and broadcast inputs are
      closed over, so their gradients flow; ``variable_carry`` collections travel in the carry; collections in
      ``variable_axes`` and ``split_rngs`` are scanned over like ``xs``, and mutable ones (e.g. ``sow`` with
      ``variable_axes={"intermediates": 0}``) come back stacked.

    Args:
      target, variable_axes, variable_broadcast, variable_carry, split_rngs, in_axes, out_axes, length,
        reverse, unroll, data_transform, metadata_params, methods, check_constancy_invariants: as in
        ``flax.linen.scan`` (the last one only applies to ``init``).
      memory: the budget of :func:`memjax.scan` (bytes, ``"64MiB"``, ``"5%"``, or a fraction of what
        standard BPTT stores).
      kind: the policy of :func:`memjax.scan` (``"msm"``, ``"hsm"``, ``"ism"``, ``"chen"``, ``"store_all"``,
        ``"recompute"``, ``"auto"``).
      checkpoint_policy: as in :func:`memjax.scan`.

    Returns:
      What ``nn.scan`` returns for ``target``.

    .. note::
      Random streams (``make_rng`` in the body, e.g. dropout) are those of ``nn.scan`` with the same arguments,
      so even stochastic models give ``nn.scan``'s values; the forward pass and every recomputation of a step
      use the same key, so gradients are exact. Non-carry outputs with ``out_axes=flax.core.broadcast`` are
      not supported outside ``init``.
    """
    _flax()
    import flax.linen as nn

    core = functools.partial(
        _lift_scan,
        variable_axes=dict(variable_axes),
        variable_broadcast=variable_broadcast,
        variable_carry=variable_carry,
        split_rngs=dict(split_rngs),
        in_axes=in_axes,
        out_axes=out_axes,
        length=length,
        reverse=reverse,
        unroll=unroll,
        data_transform=data_transform,
        metadata_params=dict(metadata_params),
        check_constancy_invariants=check_constancy_invariants,
        memory=memory,
        kind=kind,
        checkpoint_policy=checkpoint_policy,
    )
    core.__name__ = "scan"  # Flax names the lifted class after the transform: ScanLSTMCell, as nn.scan does
    return nn.transforms.lift_transform(core, target, methods=methods)


def _lift_scan(
    fn,
    *,
    variable_axes,
    variable_broadcast,
    variable_carry,
    split_rngs,
    in_axes,
    out_axes,
    length,
    reverse,
    unroll,
    data_transform,
    metadata_params,
    check_constancy_invariants,
    memory,
    kind,
    checkpoint_policy,
):
    """The scope-level transform (``flax.core.lift.scan`` with :func:`memjax.scan` as the loop)."""
    lift, axes_scan, meta, scope_lib = _flax()
    flax_scan = lift.scan(
        fn,
        variable_axes=variable_axes,
        variable_broadcast=variable_broadcast,
        variable_carry=variable_carry,
        split_rngs=split_rngs,
        in_axes=in_axes,
        out_axes=out_axes,
        length=length,
        reverse=reverse,
        unroll=unroll,
        data_transform=data_transform,
        metadata_params=metadata_params,
        check_constancy_invariants=check_constancy_invariants,
    )
    in_groups, in_group_axes = _unzip(
        [(col, axes[0] if isinstance(axes, tuple) else axes) for col, axes in variable_axes.items()]
    )
    out_groups, out_group_axes = _unzip(
        [(col, axes[1] if isinstance(axes, tuple) else axes) for col, axes in variable_axes.items()]
    )
    rng_groups, rng_splits = _unzip(list(split_rngs.items()))
    broadcast = axes_scan.broadcast

    def inner(scope_fn, repack_fn, variable_groups, rng_group_values, init, *args):
        lengths = set(
            jax.tree_util.tree_leaves(
                jax.tree_util.tree_map(lambda axis, x: _leading(x, axis, broadcast), in_axes, args)
            )
        )
        if len(lengths) > 1:
            raise ValueError(f"memjax.flax.scan got inputs of different lengths along in_axes: {sorted(lengths)}.")
        if lengths and length is not None and lengths != {length}:
            raise ValueError(f"memjax.flax.scan got length={length} but inputs of length {lengths.pop()}.")
        steps = length if length is not None else (lengths.pop() if lengths else None)
        if steps is None:
            raise ValueError("memjax.flax.scan: no input is scanned over; pass length=.")

        rng_split = tuple(
            lift.tree_map_rngs(lambda key: jax.random.split(_clone(key), steps), group)
            for group, split in zip(rng_group_values, rng_splits)
            if split
        )
        broadcast_vars, carry_vars = variable_groups[0], _unfreeze(variable_groups[1])
        scan_vars = tuple(
            _to_front(meta.remove_axis(group, axis, metadata_params), axis)
            for group, axis in zip(variable_groups[2:], in_group_axes)
        )
        xs_args = jax.tree_util.tree_map(lambda axis, x: () if axis is broadcast else _to_front(x, axis), in_axes, args)
        counters, last = [], []  # (shared rng counters, as the body first found them); their final state

        def body(carry, x):
            carry_vars_in, c = carry
            scan_vars_t, rng_split_t, xs_t = x
            args_t = jax.tree_util.tree_map(lambda axis, arg, xt: arg if axis is broadcast else xt, in_axes, args, xs_t)
            it = iter(rng_split_t)
            rngs_t = tuple(next(it) if split else group for group, split in zip(rng_group_values, rng_splits))
            groups = (broadcast_vars, carry_vars_in) + tuple(scan_vars_t)
            if data_transform is not None:
                groups, rngs_t = data_transform(groups, rngs_t)
            scopes = scope_fn(groups, rngs_t)
            leaves = jax.tree_util.tree_leaves(scopes)
            if not counters:
                counters.extend((s.rng_counters, _copy_counters(s.rng_counters)) for s in leaves)
            for s, (_, start) in zip(leaves, counters):
                s.rng_counters = _copy_counters(start)
            c, y = fn(scopes, c, *args_t)
            last[:] = [s.rng_counters for s in leaves]
            out_vars = repack_fn(scopes)
            carry_out = tuple({**cin, **_unfreeze(cout)} for cin, cout in zip(carry_vars_in, out_vars[1]))
            ys = jax.tree_util.tree_map(lambda axis, v: _no_broadcast(axis, broadcast) or v, out_axes, y)
            return (carry_out, c), (ys, tuple(out_vars[2:]))

        xs_all = (scan_vars, rng_split, xs_args)
        if check_constancy_invariants:
            # nn.scan traces the body once more before its loop (its constancy check), which advances the rng
            # counters; doing the same keeps every random stream equal to nn.scan's.
            # A fresh function object: JAX caches traces per function, and memjax must trace `body` anew, from the
            # advanced counters.
            first = jax.tree_util.tree_map(lambda a: a[-1] if reverse else a[0], xs_all)
            jax.eval_shape(lambda carry, x: body(carry, x), (carry_vars, init), first)
            counters[:] = [(shared, _copy_counters(final)) for (shared, _), final in zip(counters, last)]
        (carry_vars, c), (ys, scan_out) = _memjax_scan(
            body,
            (carry_vars, init),
            xs_all,
            length=steps,
            reverse=reverse,
            unroll=unroll,
            memory=memory,
            kind=kind,
            checkpoint_policy=checkpoint_policy,
        )
        for (shared, _), final in zip(counters, last):
            shared.clear()
            shared.update(final)  # later make_rng calls on these scopes go on from one pass of the body
        ys = jax.tree_util.tree_map(lambda axis, v: _from_front(v, axis), out_axes, ys)
        scan_out = tuple(
            meta.add_axis(_from_front(group, axis), axis, metadata_params)
            for group, axis in zip(scan_out, out_group_axes)
        )
        return (c, ys), (broadcast_vars, carry_vars) + scan_out

    memjax_scan = lift.pack(
        inner,
        (variable_broadcast, variable_carry) + in_groups,
        (variable_broadcast, variable_carry) + out_groups,
        rng_groups,
        name="scan",
    )

    def transformed(scopes, init, *args):
        if _initializing(scopes, variable_broadcast, scope_lib):
            return flax_scan(scopes, init, *args)
        return memjax_scan(scopes, init, *args)

    return transformed


def _copy_counters(counters: dict) -> dict:
    """Copy nested rng counters, keeping the keys themselves (Flax looks child counters up by identity)."""
    return {key: _copy_counters(value) if isinstance(value, dict) else value for key, value in counters.items()}


def _unzip(pairs):
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _clone(key):
    return jax.random.clone(key) if hasattr(jax.random, "clone") else key


def _unfreeze(tree):
    from flax.core import unfreeze

    return unfreeze(tree)


def _initializing(scopes, variable_broadcast, scope_lib) -> bool:
    """Whether variables may be created: then ``nn.scan`` itself runs (no gradient is taken through ``init``)."""
    watched = scope_lib.union_filters(variable_broadcast, "params")
    return any(
        not scope_lib.is_filter_empty(scope_lib.intersect_filters(s.mutable, watched))
        for s in jax.tree_util.tree_leaves(scopes)
    )


def _leading(x, axis, broadcast):
    if axis is broadcast:
        return ()
    leaves = jax.tree_util.tree_leaves(x)
    return leaves[0].shape[axis] if leaves else ()


def _no_broadcast(axis, broadcast):
    if axis is broadcast:
        raise NotImplementedError(
            "memjax.flax.scan does not support out_axes=flax.core.broadcast outside init; "
            "return the value in the carry instead."
        )
    return None


def _to_front(tree, axis: int):
    if axis == 0:
        return tree
    return jax.tree_util.tree_map(lambda a: jax.numpy.moveaxis(a, axis, 0), tree)


def _from_front(tree, axis: int):
    if axis == 0:
        return tree
    return jax.tree_util.tree_map(lambda a: jax.numpy.moveaxis(a, 0, axis), tree)


# ---------------------------------------------------------------------------------------------------------------
# NNX
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------------------------


def explain(
    module,
    carry,
    xs,
    variables=None,
    *,
    memory=None,
    kind: str | None = None,
    checkpoint_policy=None,
    executor: str = "auto",
    verbose: bool = True,
):
    """:func:`memjax.explain` for a Flax recurrent cell: what the gradient will store and recompute.

    Nothing runs: the cell's step is traced abstractly, so ``carry`` and ``xs`` may be arrays or
    ``jax.ShapeDtypeStruct``. The report is the one for the loop :func:`scan` / :func:`nnx_scan` (and the RNN
    wrappers) run with the same ``memory`` and ``kind``, and its first line names the cell.

    Example::

      cell = nn.LSTMCell(features=256)
      x0 = jnp.zeros((64, 256))
      carry = cell.initialize_carry(jax.random.key(0), x0.shape)
      variables = cell.init(jax.random.key(1), carry, x0)
      xs = jax.ShapeDtypeStruct((1000, 64, 256), jnp.float32)      # [time, batch, features]
      memjax.flax.explain(cell, carry, xs, variables, memory="5%")
      # NNX: memjax.flax.explain(nnx_cell, carry, xs, memory="5%")

    Args:
      module: a Linen cell (with ``variables``) or an NNX module called as ``module(carry, x)``; or an RNN
        wrapper (:class:`RNN`, :class:`NNXRNN`, ``flax.linen.RNN``, ``flax.nnx.RNN``), whose cell is explained.
      carry: the initial carry; ``None`` for an RNN wrapper: the cell's ``initialize_carry``, as the wrapper.
      xs: the inputs, time first: ``[time, *batch, *features]``; for an RNN wrapper, as it takes them.
      variables: the Linen module's variables (``module.init(...)``); must be ``None`` for an NNX module.
      memory, kind, checkpoint_policy: as in :func:`memjax.explain`; for memjax's RNN wrappers, the
        wrapper's own by default.
      executor, verbose: as in :func:`memjax.explain`.

    Returns:
      A :class:`memjax.Explanation`.

    Raises:
      TypeError: if ``module`` is not a Flax module, or ``variables`` is missing for a Linen cell or given
        for an NNX module.
    """
    _flax()
    import flax.linen as nn
    from flax import nnx

    from memjax._explain import explain as _explain

    # memjax's RNN wrappers carry their own memory, kind and checkpoint_policy: the defaults here.
    options = dict(
        memory=getattr(module, "memory", None) if memory is None else memory,
        kind=kind or getattr(module, "kind", "msm"),
        checkpoint_policy=checkpoint_policy or getattr(module, "checkpoint_policy", None),
        executor=executor,
    )
    name = type(module).__name__
    if isinstance(module, (nn.RNN, nnx.RNN)):  # explain its cell, over the inputs moved to time-major
        if isinstance(module, nn.RNN) and variables is not None:
            variables = {collection: tree["cell"] for collection, tree in variables.items() if "cell" in tree}
        module, xs, carry = _rnn_cell(module, carry, xs)
        name = f"{name} of {type(module).__name__}"
    if isinstance(module, nn.Module):
        if variables is None:
            raise TypeError(
                f"memjax.flax.explain: variables is required for the Linen module {name}: pass "
                f"the variables that {name}.init returned (explain(cell, carry, xs, variables))."
            )
        step, init, title = (lambda c, x: module.apply(variables, c, x)), carry, f"{name} (flax.linen)"
    elif isinstance(module, nnx.Module):
        if variables is not None:
            raise TypeError(
                f"memjax.flax.explain: variables must be None for the NNX module {name}, whose "
                f"variables live in the module itself."
            )
        step, rest = _nnx_step(module, _call)
        init, title = (rest, carry), f"{name} (flax.nnx)"
    else:
        raise TypeError(f"memjax.flax.explain: module must be a flax.linen or flax.nnx Module, got {name}.")
    explanation = dataclasses.replace(_explain(step, init, xs, verbose=False, **options), title=title)
    if verbose:
        print(explanation)
    return explanation


def _rnn_cell(rnn, carry, inputs):
    """An RNN wrapper's cell, its inputs time-major, and its carry (the cell's initial one when ``None``, as the
    wrapper makes it)."""
    from flax import nnx

    cell = rnn.cell
    time_axis = 0 if rnn.time_major else np.ndim(inputs) - (cell.num_feature_axes + 1)
    xs = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((x.shape[time_axis],) + x.shape[:time_axis] + x.shape[time_axis + 1 :], x.dtype),
        inputs,
    )
    if carry is None:
        input_shape = np.shape(inputs)[:time_axis] + np.shape(inputs)[time_axis + 1 :]
        key = jax.random.key(0)
        carry = jax.eval_shape(
            lambda: cell.initialize_carry(
                *((input_shape, nnx.Rngs(key)) if isinstance(cell, nnx.Module) else (key, input_shape))
            )
        )
    return cell, xs, carry


def __getattr__(name: str):
    # The RNN wrappers subclass Flax's own, so they are defined only when asked for: importing memjax.flax
    # needs no Flax.
    if name == "RNN":
        _flax()
        from memjax._flax_rnn import RNN

        return RNN
    if name == "NNXRNN":
        _flax()
        from memjax._nnx_rnn import NNXRNN

        return NNXRNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
