"""``memjax.flax.scan``: ``flax.linen.scan`` whose loop is :func:`memjax.scan` (public through :mod:`memjax.flax`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax

from memjax._scan import scan as _memjax_scan

__all__ = ["scan"]


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
