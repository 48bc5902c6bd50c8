"""The slot read's Pallas kernel (interpret mode on a CPU) against the reference, with its
in-kernel dropout replayed outside it; on a mesh as on one device."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mosaics_jax.kernels import pallas_slots, slots
from mosaics_jax.train import sharding

B, T, H, D = 2, 40, 4, 8  # T: not a whole block; N below: not a whole number of lanes


def _inputs(count, slot_count=48):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (B, T, H, D)),
          jax.random.normal(keys[1], (count, H, slot_count, D)) * 0.5,
          jax.random.normal(keys[2], (count, H, slot_count, D)))


def _reference_with_mask(q, slot_keys, slot_values, keep, rate):
  """The reference read, with the kernel's (B, H, P, T, N) mask instead of its own draw."""
  scores = jnp.einsum("bthd,phnd->bhptn", q, slot_keys)
  probs = jax.nn.softmax(scores, axis=-1)
  if keep is not None:
    probs = jnp.where(keep, probs / (1 - rate), 0.0)
  return jnp.einsum("bhptn,phnd->bthd", probs, slot_values) / slot_keys.shape[0]


def _value_and_grads(read, inputs):
  weights = jax.random.normal(jax.random.key(9), (B, T, H, D))
  return jax.value_and_grad(lambda *x: jnp.sum(read(*x) * weights), argnums=(0, 1, 2))(*inputs)


def _assert_close(got, want, tol):
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("count", [1, 2])
def test_the_kernel_is_the_reference(count):
  inputs = _inputs(count)
  want = _value_and_grads(slots.read_slots_reference, inputs)
  got = _value_and_grads(pallas_slots.read_slots, inputs)
  _assert_close(got, want, 2e-5)


def test_its_dropout_is_the_mask_it_documents_forward_and_backward():
  rate, rng = 0.3, jax.random.key(4)
  inputs = _inputs(2)
  seed = jax.random.bits(rng, (1,), jnp.uint32).astype(jnp.int32)[0]
  keep = pallas_slots.dropout_mask(seed, B, H, 2, T, 48, rate)
  assert abs(float(keep.mean()) - (1 - rate)) < 0.02  # the rate it was asked for
  assert not np.array_equal(keep[0], keep[1]) and not np.array_equal(keep[:, 0], keep[:, 1])
  got = _value_and_grads(lambda *x: pallas_slots.read_slots(*x, rng, rate), inputs)
  want = _value_and_grads(lambda *x: _reference_with_mask(*x, keep, rate), inputs)
  _assert_close(got, want, 2e-5)
  same, other = (pallas_slots.read_slots(*inputs, key, rate) for key in (rng, jax.random.key(5)))
  assert not np.allclose(other, same)


def test_on_a_mesh_as_on_one_device():
  """Batch over data, heads over tensor: each shard masks its own global rows and heads."""
  rate, rng = 0.2, jax.random.key(1)
  inputs = _inputs(1)
  want = _value_and_grads(lambda *x: pallas_slots.read_slots(*x, rng, rate), inputs)
  mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    got = jax.jit(lambda *x: _value_and_grads(
        lambda *y: pallas_slots.read_slots(*y, rng, rate), x))(*inputs)
  _assert_close(got, want, 2e-5)


def test_a_dropout_rate_needs_a_key():
  with pytest.raises(ValueError, match="needs a dropout_rng"):
    pallas_slots.read_slots(*_inputs(1), dropout_rate=0.1)


def test_a_model_reads_its_slots_with_the_kernel():
  """``persistent_implementation='pallas'``: v1's loss and gradients are the reference's
  (without dropout, which the two draw differently: its mask is checked above)."""
  from mosaics_jax import losses, models  # pylint: disable=import-outside-toplevel
  config = models.MosaicConfig(version=1, vocab_size=64, num_layers=1, embed_dim=32,
                               num_heads=4, persistent_slots=24, context_length=T,
                               persistent_dropout=0.0, context_dropout=0.0, residual_dropout=0.0,
                               dtype="float32", persistent_implementation="pallas")
  model = models.MosaicLM(config)
  params = models.init_params(model, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 64)
  loss = lambda m: jax.value_and_grad(lambda p: losses.cross_entropy(
      m.apply({"params": p}, tokens), tokens))(params)
  reference = models.MosaicLM(dataclasses.replace(config, persistent_implementation="reference"))
  _assert_close(loss(model), loss(reference), 2e-5)
