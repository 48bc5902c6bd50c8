"""Memory per device from the model: exact shards, activations against XLA's own accounting."""

import jax
import jax.numpy as jnp
import flax.linen as nn
import pytest

from experiments.configs import quickstart
from mosaics_jax import models
from mosaics_jax.train import memory, sharding, trainer


def config_on_8_devices(**model_fields):
  config = quickstart.get_config("")
  with config.unlocked():
    config.mesh.data, config.mesh.fsdp = 2, 4
    config.data.batch_size, config.data.seq_len = 64, 128
    for section in config.models.values():
      section.update(dtype="float32", **model_fields)
  return config


def compiled_program(config, name):
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(name, config.models[name], config, 2048, mesh)
    abstract = lambda tree, shardings: jax.tree_util.tree_map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings)
    state = abstract(program.abstract_state, program.state_shardings)
    batch = {k: jax.ShapeDtypeStruct((64, 128), jnp.int32, sharding=sharding.batch_sharding(mesh))
             for k in ("inputs", "targets")}
    return program, mesh, program.train_step.lower(state, batch).compile()


def test_parameter_and_optimizer_shards_are_those_of_the_trained_state():
  config = config_on_8_devices()
  program, mesh, _ = compiled_program(config, "mosaic")
  with jax.set_mesh(mesh):
    state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.key(0))
  device = jax.devices()[0]
  on_device = lambda tree: sum(shard.data.nbytes for leaf in jax.tree_util.tree_leaves(tree)
                               for shard in leaf.addressable_shards if shard.device == device)
  used = memory.training_memory(config, "mosaic", 8)
  assert used.parameters == on_device(state.params)
  assert used.optimizer == on_device(state.opt_state)
  assert used.parameters < on_device(state.params) * 8 / 2  # really sharded (fsdp = 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mosaic", "transformer"])
def test_activations_bracket_the_compiled_steps_temporary_memory(name):
  """XLA's temporaries on CPU (no remat) lie between the fused-kernel estimate (no T x T) and
  the XLA-path estimate (every T x T weight and mask kept), each with a 25% margin: a double
  count or a missed tensor family would leave the bracket. The slot read saves its
  probabilities here: recomputing them (the default off GPU) lowers the estimate, but XLA's CPU
  scheduler does not lower its peak with rematerialisation (docs/scaling.md)."""
  config = config_on_8_devices()
  config.models.mosaic.persistent_implementation = "reference"
  _, _, compiled = compiled_program(config, name)
  temporary = compiled.memory_analysis().temp_size_in_bytes
  used = memory.training_memory(config, name, 8, dtype="float32")
  assert 0.75 * used.activations < temporary < 1.25 * (used.activations + used.retrieval_weights)


def test_remat_moves_residuals_into_one_block_of_recomputation():
  none, block = (memory.training_memory(config_on_8_devices(remat=remat), "mosaic", 8)
                 for remat in ("none", "block"))
  # Without remat, one layer's backward rebuilds only the recomputing slot read's probabilities:
  # (8 sequences, 128 tokens, 4 heads, 448 slots) in float32, about twice (softmax and scores).
  probabilities = 8 * 128 * 4 * 448 * 4
  assert probabilities <= none.recompute <= 3 * probabilities and none.recompute_weights == 0
  kept = memory.training_memory(config_on_8_devices(persistent_implementation="reference"),
                                "mosaic", 8)
  assert kept.recompute == 0 and kept.activations > none.activations + probabilities
  assert block.activations < none.activations / 3
  assert block.retrieval_weights < none.retrieval_weights / 5  # masks built outside the blocks
  assert 0 < block.recompute - none.recompute < none.activations / 2  # one of two blocks
  assert block.recompute_weights > 0 and block.total(fused=False) < none.total(fused=False)


def test_length_by_length_values_are_told_from_wide_activations():
  assert memory._is_length_by_length((2, 12, 256, 256), 256)  # retrieval weights
  assert memory._is_length_by_length((256, 256), 256)  # positions
  assert not memory._is_length_by_length((2, 256, 256), 256)  # (B, T, F) with F = T
  assert not memory._is_length_by_length((2, 256, 12, 64), 256)


def test_activations_grow_linearly_with_the_context():
  """Beyond the fixed part, twice the context keeps twice the residuals (T x T apart), and the
  one-device table prints a row per length."""
  tiny = dict(num_layers=1, embed_dim=32, num_heads=2, vocab_size=64, ffn_hidden_dim=64,
              short_term_window=16, long_term_skip_train=(4, 16), long_term_skip_eval=4)
  saved = [memory.activation_memory(
      models.model_config("mosaic_v2_small", context_length=length, **tiny),
      jax.ShapeDtypeStruct((1, length), jnp.int32))["activations"] for length in (128, 256, 512)]
  assert saved[2] - saved[1] == pytest.approx(2 * (saved[1] - saved[0]), rel=0.02)
  table = memory.one_device_table("mosaic_v2_small", [128, 256], ["none", "block"], **tiny)
  assert len(table.splitlines()) == 2 + 4 and "| block | 1 x 256 |" in table
