"""A scanned stack of blocks computes what the unrolled one does: logits, gradients (with and
without remat), decoding; its parameters convert both ways, initialised per layer alike."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax import generate, losses, models
from mosaics_jax.models import stack
from mosaics_jax.train import metrics, sharding
from tests.models.test_models import ARCHITECTURES, SEGMENTS, TOKENS, tiny


def _pair(config):
  unrolled = models.build_model(config)
  scanned = models.build_model(dataclasses.replace(config, scan_layers=True))
  return unrolled, scanned, models.init_params(unrolled, jax.random.key(0))


def _loss(model, deterministic):
  def loss(params):
    logits = model.apply({"params": params}, TOKENS[:, :-1], SEGMENTS[:, :-1],
                         deterministic=deterministic, rngs={"dropout": jax.random.key(3)})
    return losses.cross_entropy(logits, TOKENS[:, 1:])
  return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_scanned_equals_unrolled_logits_and_gradients(name):
  unrolled, scanned, params = _pair(ARCHITECTURES[name])
  stacked = stack.to_layout(params, scanned=True)
  assert set(stacked) == {k for k in params if not k.startswith("block_")} | {"blocks"}
  assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(
      models.abstract_params(scanned))
  apply = lambda model, p: jax.jit(model.apply)({"params": p}, TOKENS, SEGMENTS)
  np.testing.assert_allclose(apply(scanned, stacked), apply(unrolled, params), rtol=1e-6,
                             atol=2e-6)
  value, grads = _loss(unrolled, True)(params)
  scanned_value, scanned_grads = _loss(scanned, True)(stacked)
  np.testing.assert_allclose(scanned_value, value, rtol=1e-6)
  assert (metrics.training_flops_per_token(stacked, scanned.config, 24) ==
          metrics.training_flops_per_token(params, unrolled.config, 24))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         stack.to_layout(scanned_grads, scanned=False), grads)


@pytest.mark.parametrize("name", ["mosaic_v1_gpt2_small", "mosaic_v2_small"])
@pytest.mark.parametrize("remat", ["dots", "block"])
def test_remat_inside_the_scan_keeps_the_gradients(name, remat):
  config = tiny(name, num_layers=3)
  _, scanned, params = _pair(config)
  stacked = stack.to_layout(params, scanned=True)
  _, reference = _loss(scanned, True)(stacked)
  rematted = models.build_model(dataclasses.replace(config, scan_layers=True, remat=remat))
  _, grads = _loss(rematted, True)(stacked)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                         grads, reference)


def test_training_mode_under_scan_uses_dropout_and_draws_m():
  """Dropout keys reach the scanned body (two keys, two outputs) and the gradients are
  finite; v2 draws m once per call and broadcasts it to every layer."""
  for name in ("mosaic_v1_gpt2_small", "mosaic_v2_small"):
    config = tiny(name, num_layers=2, residual_dropout=0.3, scan_layers=True)
    model = models.build_model(config)
    params = models.init_params(model, jax.random.key(0))
    train = lambda key: model.apply({"params": params}, TOKENS, deterministic=False,
                                    rngs={"dropout": key})
    assert not np.allclose(train(jax.random.key(1)), train(jax.random.key(2)))
    value, grads = _loss(model, False)(params)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["mosaic_v2_small", "llama_small"])
def test_scanned_initialisation_scales_with_depth_as_unrolled(name):
  """v2 Table 6: std 1/sqrt(2 d (l+1)), each layer of the stack drawn with its own key."""
  config = tiny(name, num_layers=4, embed_dim=64, num_heads=2)
  unrolled, scanned, params = _pair(config)
  stacked = models.init_params(scanned, jax.random.key(0))
  ours = stack.to_layout(stacked, scanned=False)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    got = ours
    for entry in path:
      got = got[entry.key]
    assert got.shape == leaf.shape
    if leaf.size >= 1024 and np.std(leaf) > 0:
      np.testing.assert_allclose(np.std(got), np.std(leaf), rtol=0.15,
                                 err_msg=jax.tree_util.keystr(path))
  first = stacked["blocks"]["ffn" if "mosaic" in name else "mlp"]["down"]["kernel"]
  assert not np.allclose(first[0] / np.std(first[0]), first[1] / np.std(first[1]))  # own keys


@pytest.mark.parametrize("name", ["mosaic_v1_gpt2_small", "mosaic_v2_gpt2_small",
                                  "llama_gpt2_small_long_short"])
def test_scanned_decoding_gives_the_logits_of_recomputation(name):
  _, model, params = _pair(ARCHITECTURES[name])
  params = stack.to_layout(params, scanned=True)
  length = TOKENS.shape[1]
  full = jax.jit(model.apply)({"params": params}, TOKENS)
  cache = generate.init_cache(model, 2, length)
  assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(cache["blocks"]))  # stacked
  step = jax.jit(lambda p, c, t: model.apply({"params": p, "cache": c}, t, decode=True,
                                             mutable=["cache"]))
  outs = []
  for lo, hi in [(0, 7)] + [(i, i + 1) for i in range(7, length)]:
    logits, variables = step(params, cache, TOKENS[:, lo:hi])
    cache = variables["cache"]
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-5)


def test_scanned_parameters_and_cache_on_a_mesh():
  """Stacked parameters keep their per-layer sharding (``layers`` replicated); the cache's
  rows split after its layer axis; sampling on the mesh equals one device."""
  _, model, params = _pair(ARCHITECTURES["mosaic_v2_gpt2_small"])
  params = stack.to_layout(params, scanned=True)
  mesh = sharding.make_mesh(dict(data=2, fsdp=4, tensor=1))
  shardings = sharding.logical_to_shardings(models.logical_axes(model), params, mesh)
  specs = [s.spec for s in jax.tree.leaves(shardings["blocks"])]
  assert all(spec[0] is None for spec in specs) and any("fsdp" in spec for spec in specs)
  on_mesh = jax.device_put(params, shardings)
  cache = generate.init_cache(model, 8, 16, mesh)
  keys = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache)
          if getattr(path[-1], "key", "") == "keys"]
  assert keys and all(leaf.sharding.spec[:2] == (None, ("data", "fsdp")) for leaf in keys)
  prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :3].tolist()]
  greedy = dict(max_new_tokens=5, rng=jax.random.key(0), temperature=0.0)
  assert (generate.sample(model, on_mesh, prompts, mesh=mesh, **greedy) ==
          generate.sample(model, params, prompts, **greedy))
  beams = dict(beam_size=2, max_new_tokens=3)
  assert ([[t for t, _ in r] for r in generate.beam_search(model, on_mesh, prompts, mesh=mesh,
                                                            **beams)] ==
          [[t for t, _ in r] for r in generate.beam_search(model, params, prompts, **beams)])


def test_layout_conversion_round_trips_nested_trees():
  moments = {"block_0": {"w": np.ones(2)}, "block_1": {"w": np.zeros(2)}, "head": np.ones(3)}
  stacked = stack.to_layout({"mu": moments}, scanned=True)["mu"]  # nested one level down
  assert set(stacked) == {"blocks", "head"} and stacked["blocks"]["w"].shape == (2, 2)
  back = stack.to_layout({"mu": stacked}, scanned=False)["mu"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, moments)
  assert stack.to_layout(back, scanned=False) is not back  # converted copies, same values
