"""Equinox needs no adapter: close over the ``eqx.Module`` inside the step given to :func:`memjax.scan`.

``memjax.scan`` closure-converts the step, so every array the step closes over (here the GRU cell's weights)
becomes an explicit, differentiable input of its custom VJP, and ``eqx.filter_grad`` / ``eqx.filter_value_and_grad``
return their gradients as usual::

  cell = eqx.nn.GRUCell(input_size, hidden_size, key=key)

  def loss(cell, xs):                                   # xs: [time, batch, input_size]
      def step(h, x):
          h = jax.vmap(cell)(x, h)                      # equinox cells are unbatched
          return h, jnp.sum(h**2, axis=-1)
      h, ys = memjax.scan(step, jnp.zeros((xs.shape[1], hidden_size)), xs, memory="5%")
      return jnp.mean(ys)

  grads = eqx.filter_grad(loss)(cell, xs)               # the same as with jax.lax.scan

Non-array fields of the module (activation functions, sizes) stay static; nothing has to be partitioned by
hand. Run this file to check the gradient against ``jax.lax.scan``'s and to see what memjax stores.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

import memjax


def main(time_steps: int = 500, batch: int = 16, input_size: int = 32, hidden_size: int = 128) -> None:
    cell = eqx.nn.GRUCell(input_size, hidden_size, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (time_steps, batch, input_size))

    def loss(cell, xs, scan, **kwargs):
        def step(h, x):
            h = jax.vmap(cell)(x, h)
            return h, jnp.sum(h**2, axis=-1)

        _, ys = scan(step, jnp.zeros((batch, hidden_size)), xs, **kwargs)
        return jnp.mean(ys)

    grad_lax = eqx.filter_jit(eqx.filter_grad(loss))(cell, xs, jax.lax.scan)
    grad_mem = eqx.filter_jit(eqx.filter_grad(loss))(cell, xs, memjax.scan, memory="5%")
    difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree_util.tree_leaves(grad_mem), jax.tree_util.tree_leaves(grad_lax))
    )
    print(f"largest gradient difference from jax.lax.scan: {difference:.2e}")
    memjax.explain(lambda h, x: (jax.vmap(cell)(x, h), None), jnp.zeros((batch, hidden_size)), xs, memory="5%")


if __name__ == "__main__":
    main()
