"""Sharding on 8 fake CPU devices: every mesh gives the single-device step; golden specs."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from mosaics_jax.train import sharding, trainer
from mosaics_jax.train.config import base_config, model_section

GOLDEN = pathlib.Path(__file__).parent / "golden"
SEQ, BATCH, VOCAB = 16, 8, 256
SIZE = dict(num_layers=2, embed_dim=64, num_heads=8, vocab_size=VOCAB, context_length=SEQ)
MODELS = {
    "mosaic_v1": model_section("mosaic_v1_gpt2_small", **SIZE, persistent_slots=64,
                               persistent_dropout=0.1, residual_dropout=0.1),
    "mosaic_v2": model_section("mosaic_v2_small", **SIZE, ffn_hidden_dim=128,
                               short_term_window=6, long_term_skip_train=(2, 5),
                               long_term_skip_eval=3),
    "gpt2": model_section("gpt2_small", **SIZE),
    "llama_long_short": model_section("llama_small_long_short", **SIZE, mlp_hidden_dim=128,
                                      short_term_window=6, long_term_skip_train=(2, 5),
                                      long_term_skip_eval=3),
}
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]


def _config():
  """Adam's update is lr g / (|g| + eps): for entries whose gradient cancels to ~1e-8 (float
  noise from summation order), eps = 1e-8 would turn noise into a visible update; eps = 1e-6
  keeps such entries proportional to their (tiny) gradient. A wrong gradient still moves many
  parameters by ~lr = 1e-4."""
  config = base_config()
  config.data.seq_len, config.data.batch_size = SEQ, BATCH
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 1e-4, 0
  config.optimizer.eps = 1e-6
  config.train.num_steps = 10
  return config


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, (BATCH, SEQ + 1)).astype(np.int32)
  segments = np.repeat([[1] * 7 + [2] * (SEQ - 7)], BATCH, axis=0).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segments}


def _one_step(name, mesh, section=None):
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(name, section or MODELS[name], _config(), VOCAB, mesh)
    state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.key(0))
    state, step_metrics = program.train_step(state, sharding.global_batch(_batch(), mesh))
    return program, jax.device_get(state), jax.device_get(step_metrics)


@pytest.fixture(scope="module", params=sorted(MODELS))
def single_device(request):
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  return request.param, _one_step(request.param, mesh)


def test_eight_fake_devices():
  assert jax.device_count() == 8, "tests/conftest.py must set XLA_FLAGS before jax is imported"


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_steps_equal_one_device(single_device, shape):
  """Memory Mosaics on every mesh; the baselines (same layers) on the 3-axis mesh."""
  name, (_, state, step_metrics) = single_device
  if not name.startswith("mosaic") and shape != (2, 2, 2):
    pytest.skip("baselines: one mesh is enough")
  mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
  program, sharded_state, sharded_metrics = _one_step(name, mesh)
  assert abs(float(sharded_metrics["loss"]) - float(step_metrics["loss"])) < 1e-5
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                         sharded_state.params, state.params)
  # Adam's first moment is 0.1 x the gradient: the gradients agree too.
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-4),
                         sharded_state.opt_state, state.opt_state)
  # The parameters really are split: FSDP / tensor axes appear in the specs.
  specs = sharding.spec_table(program.param_shardings)
  if shape[1] > 1:
    assert any("fsdp" in spec for spec in specs.values())
  if shape[2] > 1:
    assert any("tensor" in spec for spec in specs.values())


def test_a_chunked_loss_on_a_mesh_is_the_loss_on_one_device(single_device):
  """``loss_chunk`` on the 3-axis mesh (vocabulary split over ``tensor``, the batch over the
  rest): the step of one device without it."""
  name, (_, state, step_metrics) = single_device
  if name != "gpt2":
    pytest.skip("one model: the head and loss are shared by all")
  section = ml_collections.ConfigDict(MODELS[name].to_dict())
  section.loss_chunk = 5
  mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, (2, 2, 2))))
  _, chunked_state, chunked_metrics = _one_step(name, mesh, section)
  assert abs(float(chunked_metrics["loss"]) - float(step_metrics["loss"])) < 1e-5
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                         chunked_state.params, state.params)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_specs_match_the_golden_file(name):
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(name, MODELS[name], _config(), VOCAB, mesh)
  specs = sharding.spec_table(program.param_shardings)
  path = GOLDEN / f"param_specs_{name}.json"
  if os.environ.get("UPDATE_GOLDEN") == "1":
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(specs, indent=1, sort_keys=True) + "\n")
  assert specs == json.loads(path.read_text()), "regenerate with UPDATE_GOLDEN=1 if intended"
  # Optimizer moments follow their parameters; the step counter is replicated.
  flat_state = jax.tree_util.tree_leaves_with_path(program.state_shardings)
  moments = [s for p, s in flat_state if "block_0" in str(p) and "out" in str(p)]
  assert len({str(s.spec) for s in moments}) == 1


def test_mesh_errors():
  with pytest.raises(sharding.MeshError, match="available"):
    sharding.mesh_shape(dict(data=3, fsdp=1, tensor=1), 8)
  with pytest.raises(sharding.MeshError, match="at most one -1"):
    sharding.mesh_shape(dict(data=-1, fsdp=-1, tensor=1), 8)
  assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  with pytest.raises(sharding.MeshError, match="multiple of data x fsdp"):
    sharding.check_batch(6, mesh)


def test_indivisible_dimensions_are_replicated():
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=8))
  logical = {"w": jax.sharding.PartitionSpec("embed", "heads")}
  shaped = {"w": jax.ShapeDtypeStruct((64, 12), np.float32)}  # 12 heads over 8 devices
  assert sharding.logical_to_shardings(logical, shaped, mesh)["w"].spec == \
      jax.sharding.PartitionSpec(None, None)


def test_fsdp_step_needs_no_resharding_by_replication(capfd):
  """On data 2 x fsdp 4, the embedding lookup once made XLA reshard a batch-sharded gradient to
  the table's width sharding by replicating it (an "involuntary full rematerialization"
  warning). Compiled without the persistent cache, so the partitioner really runs."""
  from tests.train.test_memory import compiled_program, config_on_8_devices
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    capfd.readouterr()
    compiled_program(config_on_8_devices(), "transformer")
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
  assert "Involuntary full rematerialization" not in capfd.readouterr().err
