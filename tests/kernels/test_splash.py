"""The TPU path (Pallas splash attention) against the reference, in Pallas interpret mode, on one
device and per shard of a mesh; the kernel choice by the target's platform."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from mosaics_jax import losses, models
from mosaics_jax.kernels import retrieval, splash, target
from mosaics_jax.train import sharding

T, H, D = 256, 2, 32


def inputs(seed=0):
  q, k, v = (jax.random.normal(r, (2, T, H, D)) for r in jax.random.split(jax.random.key(seed), 3))
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  segments = jnp.asarray([[0] * 100 + [1] * 156, [3] * T])
  return 4.0 * q, k, v, segments


@pytest.mark.parametrize("skip, window, with_segments", [
    (1, None, False),   # v1's contextual memory and v2's long-term memory at m = 1
    (1, 40, True),      # v2's short-term memory, packed documents
    (64, None, True),   # v2's long-term memory at inference (m = 64)
    ("traced", None, True),  # v2's stochastic m in training
])
def test_splash_reads_what_the_reference_reads(skip, window, with_segments):
  q, k, v, segments = inputs()
  segments = segments if with_segments else None
  scale = jnp.linspace(0.5, 1.5, T)[None, :, None] * jnp.ones((1, 1, H))  # v2's beta(n_t)

  def read(implementation, q, k, v, skip):
    return retrieval.retrieve(q, k, v, skip=skip, window=window, segment_ids=segments,
                              query_scale=scale, implementation=implementation)

  if skip == "traced":
    run = lambda impl, *x: jax.jit(lambda q, k, v, m: read(impl, q, k, v, m))(*x, jnp.int32(37))
  else:
    run = lambda impl, *x: read(impl, *x, skip)
  np.testing.assert_allclose(run("splash", q, k, v), run("reference", q, k, v), atol=2e-5)
  cotangent = jax.random.normal(jax.random.key(9), v.shape)
  grads = lambda impl: jax.grad(lambda q, k, v: jnp.sum(run(impl, q, k, v) * cotangent),
                                argnums=(0, 1, 2))(q, k, v)
  for got, want in zip(grads("splash"), grads("reference")):
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-3)


def test_a_v2_model_on_the_splash_path_matches_the_reference():
  config = models.model_config("mosaic_v2_small", num_layers=1, embed_dim=64, num_heads=2,
                               ffn_hidden_dim=64, vocab_size=64, context_length=128,
                               short_term_window=32, long_term_skip_train=(8, 32),
                               long_term_skip_eval=8)
  tokens = jax.random.randint(jax.random.key(0), (1, 128), 0, 64)
  logits = {}
  for implementation in ("splash", "reference"):
    model = models.build_model(dataclasses.replace(config,
                                                   retrieval_implementation=implementation))
    params = models.init_params(model, jax.random.key(1))
    logits[implementation] = model.apply({"params": params}, tokens, deterministic=False,
                                         rngs={"dropout": jax.random.key(2)})  # m drawn: traced
  np.testing.assert_allclose(logits["splash"], logits["reference"], atol=2e-4)


def test_splash_is_chosen_only_where_it_applies():
  assert splash.supports(256, has_bias=False) and not splash.supports(200, has_bias=False)
  assert not splash.supports(256, has_bias=True)
  assert retrieval.resolve_implementation(None, jnp.float32, 64, length=256) == "blockwise"  # CPU
  with pytest.raises(ValueError, match="multiple of 128"):
    short = jnp.zeros((1, 200, H, D))
    retrieval.retrieve_splash(short, short, short)
  q, k, v, _ = inputs()  # asked for, but with a bias (ALiBi): XLA reads it
  bias = jax.random.normal(jax.random.key(4), (1, H, T, T))
  np.testing.assert_allclose(
      retrieval.retrieve(q, k, v, bias=bias, implementation="splash"),
      retrieval.retrieve(q, k, v, bias=bias, implementation="reference"), atol=2e-5)


def tpu_mesh(shape=(4,), names=("data",)):
  """An abstract mesh of TPU chips: what a step compiled for a TPU slice is traced under."""
  device = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")
  return jax.sharding.AbstractMesh(shape, names, abstract_device=device)


def test_the_choice_follows_the_mesh_being_traced_for_not_the_host():
  """Traced for TPU chips on this CPU host: splash (and bf16 compute) as a TPU run would,
  XLA where splash cannot read the call; back on the host without a mesh: XLA."""
  with jax.sharding.use_abstract_mesh(tpu_mesh()):
    assert target.platform() == "tpu"
    assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256) == "splash"
    assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=200) == "xla"
    assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256,
                                            has_bias=True) == "xla"
    assert models.compute_dtype(None) == jnp.bfloat16
  assert target.platform() == jax.default_backend() == "cpu"
  assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256) == "blockwise"
  assert models.compute_dtype(None) == jnp.float32


def test_recording_names_each_choice_and_counts_kernel_flops():
  q, k, v, segments = inputs()
  with target.recording() as trace:
    jax.eval_shape(lambda q, k, v: retrieval.retrieve(q, k, v, window=40, segment_ids=segments,
                                                      implementation="splash"), q, k, v)
    jax.eval_shape(lambda q, k, v: retrieval.retrieve(q, k, v), q, k, v)
  assert trace.choices == {"retrieval": {"splash": ["T 256, skip 1, window 40"],
                                         "blockwise": ["T 256, skip 1"]}}
  # A 256-long window reaching 38 pairs back, in one 256 block: one block per head, computed
  # whole: 2 * B * H * 256^2 * D per matmul, 2 forward, 3 + 4 backward.
  per_matmul = 2 * 2 * H * 256 * 256 * D
  assert trace.kernel_flops == [("splash_mha", {"fwd": 2 * per_matmul, "dq": 3 * per_matmul,
                                                "dkv": 4 * per_matmul})]
  assert splash.computed_blocks(4096, None) == 36  # causal, 8 x 8 blocks of 512: the triangle
  assert splash.computed_blocks(4096, 254) == 15  # v2's short-term window: diagonal + 1 below


@pytest.mark.parametrize("window, skip", [(None, "traced"), (40, 1)])
def test_on_a_mesh_splash_runs_per_shard_and_reads_what_the_reference_reads(window, skip):
  """Batch over data x fsdp, heads over tensor (the logical rules' axes), 8 CPU devices: the
  kernel runs in shard_map on each device's block (interpret mode), gradients included."""
  q, k, v, segments = (jnp.concatenate([x, x[::-1]]) for x in inputs())  # 4 rows
  scale = jnp.linspace(0.5, 1.5, T)[None, :, None] * jnp.ones((1, 1, H))
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  per_head = NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES, None, "tensor"))
  q, k, v = (jax.device_put(x, per_head) for x in (q, k, v))
  cotangent = jax.random.normal(jax.random.key(9), v.shape)

  def loss_and_grads(implementation):
    def loss(q, k, v, m):
      out = retrieval.retrieve(q, k, v, skip=1 if skip == 1 else m, window=window,
                               segment_ids=segments, query_scale=scale,
                               implementation=implementation)
      return jnp.sum(out * cotangent), out
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
      return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v, jnp.int32(37))

  (grads, out), (want_grads, want) = loss_and_grads("splash"), loss_and_grads("reference")
  np.testing.assert_allclose(out, want, atol=2e-5)
  for got, expected in zip(grads, want_grads):
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    text = jax.jit(lambda q, k, v: retrieval.retrieve(q, k, v, implementation="splash")).lower(
        q, k, v).as_text()
  assert "shard_map" in text or "sdy.manual_computation" in text


def _shapes(jaxpr):
  """Every value's shape in a jaxpr and in the jaxprs it calls (remat, custom VJPs, kernels)."""
  for var in jaxpr.invars + jaxpr.constvars:
    yield var.aval.shape
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield getattr(var.aval, "shape", ())
  for sub in jax.extend.core.subjaxprs(jaxpr):
    yield from _shapes(sub)


@pytest.mark.parametrize("implementation", ["splash", None])
@pytest.mark.parametrize("preset", ["mosaic_v1_gpt2_small", "mosaic_v2_small"])
def test_no_length_by_length_value_in_a_training_step_at_4096(preset, implementation):
  """The issue's "no T x T tensor anywhere for T >= 4096": on the fused path (splash here, the
  path a TPU takes; cuDNN cannot be traced without a GPU) and on the automatic choice of a CPU
  (blockwise retrieval and slot read) the gradient of the loss holds no value with two axes of
  the context length: not in the retrieval, the key recurrences, the masks or the slot read
  (the training step, dropout and v2's drawn m included). On the CPU's choice no value holds
  the slots and the whole length either (one block of probabilities at a time)."""
  length, slot_count = 4096, 48
  config = models.model_config(preset, num_layers=1, embed_dim=32, num_heads=2, vocab_size=64,
                               context_length=length, retrieval_implementation=implementation,
                               **(dict(persistent_slots=slot_count) if "v1" in preset else
                                  dict(ffn_hidden_dim=64)))
  model = models.build_model(config)
  params = models.abstract_params(model)
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)

  def loss(params, tokens):
    logits = model.apply({"params": params}, tokens, deterministic=False,
                         rngs={"dropout": jax.random.key(0)})
    return losses.cross_entropy(logits, tokens)

  jaxpr = jax.make_jaxpr(jax.grad(loss))(params, tokens).jaxpr
  square = [s for s in _shapes(jaxpr) if sum(d >= length for d in s) >= 2]
  assert not square, f"T x T values: {sorted(set(square))}"
  if implementation is None and "v1" in preset:
    by_slots = [s for s in _shapes(jaxpr) if slot_count in s and max(s) >= length]
    assert not by_slots, f"T x slots values: {sorted(set(by_slots))}"
  reference = dataclasses.replace(config, retrieval_implementation="reference")
  model = models.build_model(reference)  # the check itself sees the reference's T x T scores
  assert any(sum(d >= length for d in s) >= 2
             for s in _shapes(jax.make_jaxpr(jax.grad(loss))(params, tokens).jaxpr))
