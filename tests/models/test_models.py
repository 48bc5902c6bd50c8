"""Every model: builds, runs forward and backward, respects causality and documents."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax import losses, models
from mosaics_jax.layers import axes

T = 24
TOKENS = jax.random.randint(jax.random.key(1), (2, T), 0, 64)
SEGMENTS = jnp.asarray([[1] * 9 + [2] * 15, [7] * T])


def tiny(name, **overrides):
  """A CPU-sized version of a preset that keeps its architecture."""
  config = models.model_config(name)
  size = dict(num_layers=2, embed_dim=32, num_heads=4, vocab_size=64, context_length=T)
  if isinstance(config, models.MosaicConfig):
    size.update(persistent_slots=24, ffn_hidden_dim=64 if config.version == 2 else 0,
                short_term_window=6, long_term_skip_train=(2, 5), long_term_skip_eval=3)
  else:
    size.update(mlp_hidden_dim=64, short_term_window=6, long_term_skip_train=(2, 5),
                long_term_skip_eval=3)
  return dataclasses.replace(config, **{**size, **overrides})


def jitted(model):
  return jax.jit(model.apply, static_argnames=("deterministic",))


def _architectures():
  """One tiny config per distinct architecture among the presets (sizes shrink to CPU scale,
  so e.g. the three v2 presets become one)."""
  unique = {}
  for name in sorted(models.PRESETS):
    config = tiny(name)
    if config not in unique.values():
      unique[name] = config
  return unique


ARCHITECTURES = _architectures()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def built(request):
  model = models.build_model(ARCHITECTURES[request.param])
  return request.param, model, models.init_params(model, jax.random.key(0))


def test_all_model_kinds_are_covered():
  kinds = {(type(c).__name__, getattr(c, "version", None), getattr(c, "position", None),
            getattr(c, "mlp", None), getattr(c, "long_short_attention", None))
           for c in ARCHITECTURES.values()}
  assert len(kinds) == 7  # MM v1, MM v2, GPT-2 learned / RoPE / ALiBi, Llama, long-short


def test_forward_backward_and_fused_equals_reference(built):
  name, model, params = built

  def loss(params, deterministic):
    logits = model.apply({"params": params}, TOKENS[:, :-1], SEGMENTS[:, :-1],
                         deterministic=deterministic, rngs={"dropout": jax.random.key(3)})
    return losses.cross_entropy(logits, TOKENS[:, 1:])

  value, grads = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, False)
  assert np.isfinite(value) and 3.0 < float(value) < 6.0, name  # about ln 64 = 4.16 at init
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(jnp.sum(g * g)) for g in leaves) > 0
  reference = models.build_model(
      dataclasses.replace(model.config, retrieval_implementation="reference"))
  np.testing.assert_allclose(jitted(model)({"params": params}, TOKENS, SEGMENTS),
                             jitted(reference)({"params": params}, TOKENS, SEGMENTS), atol=1e-5)


def test_causal_and_documents_do_not_see_each_other(built):
  """Changing future tokens leaves past logits alone; the second document of a packed row
  gives the logits it gives alone (row 2: the document followed by padding, segment 0)."""
  _, model, params = built
  apply = jitted(model)
  future = TOKENS.at[:, 11:].set((TOKENS[:, 11:] + 5) % 64)
  np.testing.assert_allclose(apply({"params": params}, future, SEGMENTS)[:, :11],
                             apply({"params": params}, TOKENS, SEGMENTS)[:, :11], atol=1e-5)
  alone = jnp.stack([TOKENS[0], jnp.concatenate([TOKENS[0, 9:], TOKENS[0, :9]])])
  alone_segments = jnp.stack([SEGMENTS[0], jnp.asarray([2] * 15 + [0] * 9)])
  logits = apply({"params": params}, alone, alone_segments)
  np.testing.assert_allclose(logits[0, 9:], logits[1, :15], atol=1e-5)
  without_segments = apply({"params": params}, TOKENS[:, :15], None)  # another length: causal
  np.testing.assert_allclose(apply({"params": params}, TOKENS, None)[:, :15], without_segments,
                             atol=1e-5)


def test_dropout_only_in_training(built):
  name, model, params = built
  apply = jitted(model)
  run = lambda det, seed: apply({"params": params}, TOKENS, deterministic=det,
                                rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(run(True, 0), run(True, 1))
  has_randomness = any(v > 0 for k, v in dataclasses.asdict(model.config).items()
                       if k.endswith("dropout")) or getattr(model.config, "version", 1) == 2 or (
                           getattr(model.config, "long_short_attention", False))
  first = run(False, 0)
  differs = any(not np.allclose(first, run(False, seed)) for seed in range(1, 6))
  assert has_randomness == differs, name


# Whole blocks recomputed in both Memory Mosaics, a GPT-2 and the long/short transformer (the
# others share their blocks' code); saved matmuls in v2.
REMAT_CASES = [("mosaic_v1_gpt2_small", "block"), ("mosaic_v2_gpt2_small", "block"),
               ("mosaic_v2_gpt2_small", "dots"), ("gpt2_small", "block"),
               ("llama_gpt2_small_long_short", "block")]


@pytest.mark.parametrize("name, remat", REMAT_CASES)
def test_rematerialised_blocks_give_the_same_gradients_and_save_less(name, remat):
  """With dropout on: the recomputed forward draws the same masks."""
  from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
  model = models.build_model(ARCHITECTURES[name])
  params = models.init_params(model, jax.random.key(0))
  rematerialised = models.build_model(dataclasses.replace(model.config, remat=remat))

  def loss(model, params):
    logits = model.apply({"params": params}, TOKENS[:, :-1], SEGMENTS[:, :-1],
                         deterministic=False, rngs={"dropout": jax.random.key(3)})
    return losses.cross_entropy(logits, TOKENS[:, 1:])

  grad = lambda m: jax.jit(jax.value_and_grad(lambda p: loss(m, p)))(params)
  (value, grads), (value_remat, grads_remat) = grad(model), grad(rematerialised)
  np.testing.assert_allclose(value_remat, value, rtol=1e-6)
  for g, g_remat in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_remat)):
    np.testing.assert_allclose(g_remat, g, rtol=1e-4, atol=1e-6, err_msg=name)
  saved = lambda m: sum(a.size for a, source in saved_residuals(lambda p: loss(m, p), params)
                        if not source.startswith("from the argument"))
  assert saved(rematerialised) < saved(model), name


def test_every_parameter_has_logical_axes(built):
  _, model, params = built
  specs = models.logical_axes(model)
  flat_params = jax.tree_util.tree_leaves_with_path(params)
  flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(
      x, jax.sharding.PartitionSpec))
  assert len(flat_params) == len(flat_specs)
  for (path, value), spec in zip(flat_params, flat_specs):
    assert len(spec) == value.ndim, (path, spec)
    assert all(name is None or name in axes.ALL for name in spec), (path, spec)
    assert value.dtype == jnp.float32


def test_bf16_compute_keeps_float32_params_and_logits(built):
  _, model, params = built
  bf16 = models.build_model(dataclasses.replace(model.config, dtype="bfloat16"))
  logits = jitted(bf16)({"params": params}, TOKENS)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, jitted(model)({"params": params}, TOKENS), atol=0.15)


PAPER_COUNTS = {
    # v1 paper / official code: exactly.
    "mosaic_v1_gpt2_small": (123_588_336, 0.0),
    # v2 paper: 9.9B (MMv2 large), 8.8B (transformer large); section 1.6 of spec/v2_paper.md.
    "mosaic_v2_large": (9.9e9, 0.005),
    "llama_large": (8.8e9, 0.005),
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_the_papers(name):
  count = models.count_params(models.abstract_params(models.build_model(models.model_config(name))))
  expected, tolerance = PAPER_COUNTS[name]
  assert abs(count - expected) <= tolerance * expected, f"{name}: {count:,}"


def test_v2_large_without_long_term_memory_is_the_papers_8_3b():
  config = models.model_config("mosaic_v2_large", long_term_memory=False)
  count = models.count_params(models.abstract_params(models.build_model(config)))
  assert abs(count - 8.3e9) < 0.005 * 8.3e9


@pytest.mark.parametrize("name", ["mosaic_v1_gpt2_small", "mosaic_v2_small", "gpt2_small",
                                  "llama_small"])
def test_a_model_without_blocks_is_its_embedding_read_by_its_head(name):
  """num_layers=0 (what the compile report costs apart from the blocks), either layout."""
  for scan_layers in (False, True):
    model = models.build_model(tiny(name, num_layers=0, scan_layers=scan_layers))
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    assert not any("block" in key for key in params), list(params)
    assert model.apply({"params": params}, tokens).shape == (1, 8, model.config.vocab_size)


def test_bad_configs_fail_with_a_clear_message():
  with pytest.raises(ValueError, match="not divisible"):
    models.model_config("mosaic_v1_gpt2_small", num_heads=7)
  with pytest.raises(ValueError, match="no field"):
    models.model_config("mosaic_v1_gpt2_small", num_head=12)
  with pytest.raises(ValueError, match="Unknown model preset"):
    models.model_config("gpt5")
  with pytest.raises(ValueError, match="dropout rate"):
    models.model_config("gpt2_small", residual_dropout=1.5)
  with pytest.raises(ValueError, match="ffn_hidden_dim"):
    models.model_config("mosaic_v2_small", ffn_hidden_dim=0)
  with pytest.raises(ValueError, match="remat='all'"):
    models.model_config("gpt2_small", remat="all")
  with pytest.raises(ValueError, match="lo <= hi"):
    models.model_config("mosaic_v2_small", long_term_skip_train=(10, 2))
  with pytest.raises(ValueError, match="num_layers=-1"):
    models.model_config("mosaic_v2_small", num_layers=-1)
  with pytest.raises(ValueError, match="loss_chunk=-8: tokens per chunk"):
    models.model_config("llama_gpt2_small", loss_chunk=-8)
  with pytest.raises(ValueError, match="learned"):
    model = models.build_model(tiny("gpt2_small"))
    model.init(jax.random.key(0), jnp.zeros((1, T + 1), jnp.int32))


def _shapes(jaxpr):
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield getattr(var.aval, "shape", ())
  for sub in jax.extend.core.subjaxprs(jaxpr):
    yield from _shapes(sub)


@pytest.mark.parametrize("name", ["mosaic_v1_gpt2_small", "llama_gpt2_small"])
def test_the_chunked_loss_is_the_loss_without_the_batchs_logits(name):
  """``loss_chunk``: the same token losses and gradients (a tied head with v1's logit scale, an
  untied one: the head code all models share; a last chunk padded, ignored targets), and no
  (B, T, vocab) value in the gradient."""
  model = models.build_model(dataclasses.replace(ARCHITECTURES[name], vocab_size=80))  # no width
  params = models.init_params(model, jax.random.key(0))
  chunked = models.build_model(dataclasses.replace(model.config, loss_chunk=5))  # 23 = 5*4 + 3
  targets = TOKENS[:, 1:].at[0, :4].set(-1)

  def loss(model, params):
    token_losses = model.apply({"params": params}, TOKENS[:, :-1], SEGMENTS[:, :-1],
                               targets=targets)
    return losses.mean_loss(token_losses, targets), token_losses

  grad = lambda m: jax.jit(jax.value_and_grad(lambda p: loss(m, p), has_aux=True))(params)
  (value, token_losses), grads = grad(model)
  (value_chunked, chunked_losses), grads_chunked = grad(chunked)
  logits = jitted(model)({"params": params}, TOKENS[:, :-1], SEGMENTS[:, :-1])
  np.testing.assert_allclose(value, losses.cross_entropy(logits, targets), rtol=1e-6)
  np.testing.assert_allclose(chunked_losses, token_losses, rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(value_chunked, value, rtol=1e-6)
  for g, g_chunked in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_chunked)):
    np.testing.assert_allclose(g_chunked, g, rtol=1e-4, atol=1e-6, err_msg=name)
  vocab = model.config.vocab_size
  whole = lambda m: [s for s in _shapes(jax.make_jaxpr(jax.grad(lambda p: loss(m, p)[0]))(
      params).jaxpr) if len(s) == 3 and s[-1] == vocab and s[1] >= T - 1]
  assert whole(model) and not whole(chunked), name  # the check sees the unchunked logits
