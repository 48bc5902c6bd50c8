"""The blockwise retrieval (kernels/blockwise.py): the reference's values and gradients for every
mask kind over many blocks and padded lengths, a traced skip, and no T x T value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax.kernels import blockwise, retrieval
from tests.kernels.test_retrieval import MASK_KINDS, _inputs, _kwargs
from tests.kernels.test_splash import _shapes


def _loss(read):
  def loss(q, k, v, scale, kwargs):
    kw = dict(kwargs)
    if "query_scale" in kw:
      kw["query_scale"] = scale
    out = read(q, k, v, **kw)
    return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out
  return loss


@pytest.mark.parametrize("block", [8, 7])  # 3 whole blocks; 4 blocks, the last one padded
@pytest.mark.parametrize("kind", sorted(MASK_KINDS))
def test_many_blocks_match_the_reference(kind, block):
  q, k, v, scale, bias = _inputs(seed=1)
  kwargs = _kwargs(kind, scale, bias)

  def blocks(q, k, v, query_scale=None, **kw):
    return blockwise.attend(retrieval.scaled_queries(q, query_scale), k, v, block=block, **kw)

  grad = lambda read: jax.value_and_grad(_loss(read), argnums=(0, 1, 2, 3), has_aux=True)(
      q, k, v, scale, kwargs)
  (_, out), grads = grad(blocks)
  (_, want), want_grads = grad(lambda *a, **kw: retrieval.retrieve_reference(*a, **kw))
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)
  for got, expected in zip(grads, want_grads):
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_traced_skip_and_bfloat16():
  q, k, v, _, _ = _inputs(seed=2)
  read = jax.jit(lambda q, k, v, skip: blockwise.attend(q, k, v, skip=skip, block=8))
  for skip in (1, 5, 30):
    np.testing.assert_allclose(read(q, k, v, jnp.int32(skip)),
                               retrieval.retrieve_reference(q, k, v, skip=skip), atol=1e-5)
  assert read._cache_size() == 1  # pylint: disable=protected-access
  low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = blockwise.attend(*low, skip=1, block=8)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), retrieval.retrieve_reference(q, k, v),
                             atol=5e-2)


@pytest.mark.parametrize("window", [None, 256])
def test_no_length_by_length_value_in_the_gradient(window):
  length, segments = 2048, jnp.zeros((1, 2048), jnp.int32).at[:, 1000:].set(1)
  shape = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)

  def loss(q, k, v):
    return jnp.sum(retrieval.retrieve(q, k, v, skip=1, window=window, segment_ids=segments,
                                      implementation="blockwise") ** 2)

  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(shape, shape, shape).jaxpr
  square = [s for s in _shapes(jaxpr) if sum(d >= length for d in s) >= 2]
  assert not square, f"T x T values: {sorted(set(square))}"
  reference = jax.make_jaxpr(jax.grad(lambda q, k, v: jnp.sum(retrieval.retrieve(
      q, k, v, implementation="xla") ** 2), argnums=(0, 1, 2)))(shape, shape, shape).jaxpr
  assert any(sum(d >= length for d in s) >= 2 for s in _shapes(reference))  # the check sees them
