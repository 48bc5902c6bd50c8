"""The slot read of v1's persistent memory: every path equals the reference, values and
gradients, and the default path keeps no slot probabilities for the backward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from mosaics_jax.kernels import slots
from mosaics_jax.layers.persistent import PersistentMemory

B, T, H, D, N = 2, 10, 3, 8, 40


def _inputs(count, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  queries = 2.0 * jax.random.normal(keys[0], (B, T, H, D), dtype)
  slot_keys = jax.random.normal(keys[1], (count, H, N, D))
  slot_values = jax.random.normal(keys[2], (count, H, N, D))
  return queries, slot_keys, slot_values


def _value_and_grads(implementation, inputs, dropout_rate=0.0):
  rng = jax.random.key(7) if dropout_rate else None

  def loss(*args):
    out = slots.read_slots(*args, dropout_rate=dropout_rate, dropout_rng=rng,
                           implementation=implementation)
    return jnp.sum(out * jnp.sin(jnp.arange(out.size).reshape(out.shape))), out

  (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(*inputs)
  return out, grads


def _assert_close(got, want, tol):
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                               atol=tol, rtol=tol)


@pytest.mark.parametrize("implementation,dropout_rate,count", [
    ("recompute", 0.0, 1), ("recompute", 0.3, 2), ("xla", 0.0, 1), ("xla", 0.0, 3)])
def test_paths_match_reference(implementation, dropout_rate, count):
  inputs = _inputs(count)
  want = _value_and_grads("reference", inputs, dropout_rate)
  got = _value_and_grads(implementation, inputs, dropout_rate)
  _assert_close(got, want, 2e-5)


def test_bfloat16_paths_agree():
  inputs = _inputs(2, jnp.bfloat16)
  want = _value_and_grads("reference", inputs)
  for implementation in ("recompute", "xla"):
    _assert_close(_value_and_grads(implementation, inputs), want, 3e-2)


def test_dropout_zeroes_probabilities_with_the_given_key():
  inputs = _inputs(1)
  dropped = [slots.read_slots(*inputs, dropout_rate=0.5, dropout_rng=jax.random.key(s),
                              implementation="recompute") for s in (0, 0, 1)]
  np.testing.assert_array_equal(dropped[0], dropped[1])
  assert not np.allclose(dropped[0], dropped[2])
  assert not np.allclose(dropped[0], slots.read_slots(*inputs))


def _saved_floats(implementation, dropout_rate=0.0):
  rng = jax.random.key(0)
  read = lambda *args: slots.read_slots(*args, dropout_rate=dropout_rate, dropout_rng=rng,
                                        implementation=implementation).sum()
  return sum(aval.size for aval, source in saved_residuals(read, *_inputs(1))
             if not source.startswith("from the argument"))


@pytest.mark.parametrize("dropout_rate", [0.0, 0.1])
def test_recompute_keeps_no_probabilities(dropout_rate):
  probabilities = B * T * H * N
  assert _saved_floats("reference", dropout_rate) >= probabilities
  assert _saved_floats("recompute", dropout_rate) < probabilities / 4  # no (B, T, H, N) kept


def _dots_before_the_gradient(read):
  """Matmuls in ``read``'s backward pass that need none of the incoming gradient: a scheduler
  may run them as early as it likes (and keep their (B, T, H, N) results until used)."""
  out, pullback = jax.vjp(read, *_inputs(1))
  jaxpr = jax.make_jaxpr(pullback)(jnp.ones_like(out)).jaxpr
  early = 0

  def walk(jaxpr, downstream):
    nonlocal early
    for eqn in jaxpr.eqns:
      fed = any(not isinstance(v, jax.extend.core.Literal) and v in downstream
                for v in eqn.invars)
      if eqn.primitive.name == "dot_general" and not fed:
        early += 1
      for inner in jax.extend.core.jaxprs_in_params(eqn.params):  # a call's body
        walk(inner, {w for v, w in zip(eqn.invars, inner.invars)
                     if not isinstance(v, jax.extend.core.Literal) and v in downstream})
      if fed:
        downstream.update(eqn.outvars)

  walk(jaxpr, set(jaxpr.invars))
  return early


@pytest.mark.parametrize("dropout_rate", [0.0, 0.1])
def test_recompute_waits_for_the_gradient(dropout_rate):
  """The backward pass's recomputation is tied to the incoming gradient (an optimization
  barrier): under ``jax.checkpoint`` alone the TPU scheduler hoisted every layer's to the
  start of the backward pass (docs/scaling.md, v1 on v5e)."""
  rng = jax.random.key(0)
  assert _dots_before_the_gradient(lambda *args: slots.read_slots(
      *args, dropout_rate=dropout_rate, dropout_rng=rng, implementation="recompute")) == 0
  checkpointed = jax.checkpoint(lambda *args: slots.read_slots_reference(
      *args, rng, dropout_rate), policy=jax.checkpoint_policies.nothing_saveable)
  assert _dots_before_the_gradient(checkpointed) >= 1  # the scores' recomputation


def test_automatic_choice_and_errors():
  if jax.default_backend() == "cpu":
    for dropout_active in (True, False):
      assert slots.resolve_implementation(None, jnp.bfloat16, 64, dropout_active) == "blockwise"
  with pytest.raises(ValueError, match="persistent_dropout=0"):
    slots.resolve_implementation("cudnn", jnp.bfloat16, 64, dropout_active=True)
  with pytest.raises(ValueError, match="Unknown slot-read implementation"):
    slots.resolve_implementation("flash", jnp.bfloat16, 64, dropout_active=False)
  with pytest.raises(ValueError, match="needs a dropout_rng"):
    slots.read_slots(*_inputs(1), dropout_rate=0.1)
  with pytest.raises(ValueError, match=r"\(P, H, N, D\) slots"):
    queries, slot_keys, slot_values = _inputs(1)
    slots.read_slots(queries, slot_keys[:, :2], slot_values[:, :2])


def test_persistent_memory_paths_train_alike():
  """The layer with dropout on: same output and parameter gradients on either trainable path."""
  x = jax.random.normal(jax.random.key(1), (B, T, H * D))
  init = jax.nn.initializers.normal(0.2)

  def module(implementation):
    return PersistentMemory(H, num_slots=N, count=2, proj_init=init, out_init=init,
                            prob_dropout=0.2, implementation=implementation)

  params = module(None).init(jax.random.key(0), x)

  def run(implementation):
    def loss(p):
      out = module(implementation).apply(p, x, deterministic=False,
                                         rngs={"dropout": jax.random.key(3)})
      return jnp.sum(out ** 2), out
    return jax.value_and_grad(loss, has_aux=True)(params)

  _assert_close(run("recompute"), run("reference"), 2e-5)


@pytest.mark.parametrize("chunk", [4, 10, 16])  # 3 blocks, the last padded; one; one, padded
@pytest.mark.parametrize("count", [1, 2])
def test_blockwise_matches_the_reference_and_its_own_dropout(chunk, count):
  inputs = _inputs(count)
  read = lambda rate, rng: lambda q, k, v: slots.read_slots_blockwise(q, k, v, rng, rate,
                                                                       chunk=chunk)

  def value_and_grads(function):
    loss = lambda *args: jnp.sum(function(*args) * jnp.sin(jnp.arange(B * T * H * D)).reshape(
        B, T, H, D))
    return function(*inputs), jax.grad(loss, argnums=(0, 1, 2))(*inputs)

  _assert_close(value_and_grads(read(0.0, None)), _value_and_grads("reference", inputs), 2e-5)
  # With dropout: the same blocks and keys differentiated by plain autodiff.
  rng = jax.random.key(3)

  def plain(q, k, v):
    chunks = [slots._chunk_read(q[:, i:i + chunk], k, v, rng, i // chunk, 0.3)  # pylint: disable=protected-access
              for i in range(0, T, chunk)]
    return jnp.concatenate(chunks, axis=1)

  if T % chunk == 0:
    _assert_close(value_and_grads(read(0.3, rng)), value_and_grads(plain), 2e-5)
  dropped = read(0.3, rng)(*inputs)
  assert not np.allclose(dropped, read(0.0, None)(*inputs))


def test_blockwise_keeps_one_block_of_probabilities():
  queries, slot_keys, slot_values = _inputs(1)
  queries = jnp.tile(queries, (1, 64, 1, 1))  # T = 640: 5 blocks of 128
  jaxpr = jax.make_jaxpr(jax.grad(lambda q: jnp.sum(slots.read_slots_blockwise(
      q, slot_keys, slot_values))))(queries).jaxpr
  from tests.kernels.test_splash import _shapes  # pylint: disable=import-outside-toplevel
  probabilities = [s for s in _shapes(jaxpr) if len(s) == 5 and s[-1] == N]
  assert probabilities and all(s[1] <= 128 for s in probabilities), sorted(set(probabilities))
