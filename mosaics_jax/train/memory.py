"""Device memory of a training step, computed from the model: what a pod layout must fit.

Per device, on a mesh given by its shape alone (``jax.sharding.AbstractMesh``: no devices are
needed, so the table of a 256-chip slice is computed on a laptop):

  * parameters: float32, each leaf's shard under ``sharding.LOGICAL_RULES`` (as trained);
  * optimizer state: the shards of ``jax.eval_shape(optimizer.init)`` (AdamW: two moments);
  * gradients: one parameter-sized copy, two with gradient accumulation (the running sum);
  * activations: the residuals JAX's autodiff saves for the backward pass of the training loss
    (dropout on) on the per-device micro-batch (``saved_residuals``: traced on abstract values,
    nothing runs),
    under the model's ``remat``, plus what one layer's backward pass rebuilds (``recompute``):
    with remat, the block's residuals; with v1's recomputing slot read, its slot
    probabilities. Those of shape (..., T, T) are the retrieval weights and masks of the XLA
    path, reported on their own (``retrieval_weights``): fused kernels (splash, cuDNN flash
    attention) keep O(T) softmax statistics instead, and these decide whether long contexts
    fit. A retrieval with weight dropout runs on the reference path on every device, so its
    T x T weights always count (``weights_kept``).

``python -m mosaics_jax.train.memory --model=mosaic_v2_gpt2_small`` prints the memory to
train one model on one device per context length (docs/scaling.md, Long contexts).

XLA's buffer assignment (fusions, temporaries, collectives' buffers) moves the true peak by
some tens of percent either way; ``tests/train/test_memory.py`` compares the estimate with the
compiled step's own accounting on CPU, and ``python -m mosaics_jax.compile`` prints it beside
the TPU compiler's (docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import math

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
# Public only as ``jax.ad_checkpoint.print_saved_residuals``, which prints the same list.
from jax._src.ad_checkpoint import saved_residuals
from jax.sharding import NamedSharding

from mosaics_jax import models
from mosaics_jax.kernels import slots, target
from mosaics_jax.train import optimizer as optimizer_lib, sharding, trainer
from mosaics_jax.train.config import (base_config, model_config as model_config_of,
                                      model_section, optimizer_config)

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Memory:
  """Bytes per device of one training step. ``*_weights``: the T x T retrieval weights and
  masks of the XLA or reference path (fused kernels keep O(T) statistics instead)."""

  parameters: int
  optimizer: int
  gradients: int
  activations: int  # residuals kept for the backward pass, T x T ones excepted
  retrieval_weights: int
  recompute: int  # what one layer's backward rebuilds (remat, the recomputing slot read)
  recompute_weights: int
  # Weight dropout puts a retrieval on the reference path, which keeps its T x T weights
  # whatever kernels the device has (no fused kernel drops out weights).
  weights_kept: bool = False

  def weights(self, fused: bool) -> int:
    """The T x T bytes the step keeps with fused retrieval kernels (splash, cuDNN) or the XLA
    path: none when fused, unless weight dropout keeps a retrieval on the reference path."""
    return (0 if fused and not self.weights_kept else
            self.retrieval_weights + self.recompute_weights)

  def total(self, fused: bool) -> int:
    """The step's peak estimate with fused retrieval kernels (splash, cuDNN) or the XLA path."""
    return (self.parameters + self.optimizer + self.gradients + self.activations +
            self.recompute + self.weights(fused))


def _shard_bytes(tree, shardings) -> int:
  return sum(math.prod(s.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
             for leaf, s in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(
                 shardings, is_leaf=lambda x: isinstance(x, NamedSharding))))


def _residuals(model_config, tokens: jax.ShapeDtypeStruct, params) -> tuple[int, int, bool]:
  """(bytes, T x T bytes, whether a retrieval took the reference path) of what the backward
  pass of the training loss keeps (dropout on, v2's m drawn), parameters excepted."""
  loss = trainer.make_loss(models.build_model(model_config))
  batch = dict(inputs=tokens, targets=tokens)
  with nn.logical_axis_rules(sharding.LOGICAL_RULES), target.recording() as trace:
    residuals = saved_residuals(lambda p, b: loss(p, b, jax.random.key(0)), params, batch)
  saved = [(aval.shape, aval.size * aval.dtype.itemsize) for aval, source in residuals
           if not source.startswith("from the argument")]  # parameters, tokens: counted apart
  return (sum(size for _, size in saved),
          sum(size for shape, size in saved if _is_length_by_length(shape, tokens.shape[1])),
          "reference" in trace.choices.get("retrieval", {}))


def _is_length_by_length(shape: tuple[int, ...], length: int) -> bool:
  """Retrieval weights (B, H, T, T), masks (1, 1, T, T), positions (T, T): not a (B, T, F)
  activation whose width F happens to equal T (v2 GPT2-small's SwiGLU at T = 2048)."""
  return len(shape) != 3 and shape[-2:] == (length, length)


def training_memory(config, name: str, device_count: int, dtype: str = "bfloat16") -> Memory:
  """Bytes per device to train model ``name`` of the experiment ``config`` (its mesh, batch,
  accumulation, sequence length, tokenizer size and ``remat``) on ``device_count``
  accelerators, computing in ``dtype`` unless the model names its own. Activations are
  counted whole on every device (the layouts here keep tensor = 1)."""
  model_config = model_config_of(name, config.models[name], config.data.tokenizer.vocab_size)
  # Counted on unrolled blocks: a scanned stack keeps the same residuals, stacked.
  model_config = dataclasses.replace(model_config, dtype=model_config.dtype or dtype,
                                     scan_layers=False)
  settings = optimizer_config(name, config)
  accumulation = settings.accumulation_steps
  mesh_shape = sharding.mesh_shape(config.mesh, device_count)
  mesh = jax.sharding.AbstractMesh(mesh_shape, sharding.MESH_AXES)
  micro_batch = config.data.batch_size // (mesh_shape[0] * mesh_shape[1] * accumulation)
  tokens = jax.ShapeDtypeStruct((micro_batch, config.data.seq_len), jnp.int32)
  model = models.build_model(model_config)
  params = models.abstract_params(model)
  with nn.logical_axis_rules(sharding.LOGICAL_RULES):
    opt_state = jax.eval_shape(
        optimizer_lib.make_optimizer(settings, config.train.num_steps).init, params)
    param_shardings = sharding.logical_to_shardings(models.logical_axes(model), params, mesh)
    opt_shardings = sharding.state_shardings(opt_state, param_shardings, mesh)
  parameter_bytes = _shard_bytes(params, param_shardings)
  return Memory(parameters=parameter_bytes,
                optimizer=_shard_bytes(opt_state, opt_shardings),
                gradients=parameter_bytes * (2 if accumulation > 1 else 1),
                **activation_memory(model_config, tokens, params))


def _as_on_accelerators(model_config):
  """The model with its automatic kernels traced as an accelerator without a fused kernel
  runs them. Retrieval on XLA's path: its T x T weights are then reported apart
  (``retrieval_weights``), and the fused kernels' O(T) statistics stand in for them (a CPU
  host would take the blockwise path, whose residuals are neither; with weight dropout the
  automatic choice is the reference everywhere, and stays). v1's automatic slot read as the
  recomputing one, whatever the host: what a GPU without cuDNN keeps, an upper bound for a
  TPU's Pallas kernel and cuDNN (their per-row statistics are smaller still)."""
  if (isinstance(model_config, models.MosaicConfig) and model_config.version == 1 and
      model_config.persistent_implementation is None):
    model_config = dataclasses.replace(model_config, persistent_implementation="recompute")
  dropout = max(getattr(model_config, "context_dropout", 0.0),
                getattr(model_config, "attention_dropout", 0.0))
  if model_config.retrieval_implementation is not None or dropout > 0:
    return model_config
  return dataclasses.replace(model_config, retrieval_implementation="xla")


def activation_memory(model_config, tokens: jax.ShapeDtypeStruct, params=None) -> dict:
  """The activation fields of ``Memory`` for one device's micro-batch of ``tokens``."""
  model_config = _as_on_accelerators(model_config)
  params = models.abstract_params(models.build_model(model_config)) if params is None else params
  saved, weights, weights_kept = _residuals(model_config, tokens, params)
  recompute = recompute_weights = 0
  one_layer = dataclasses.replace(model_config, num_layers=1)
  one_params = None
  if model_config.remat != "none":  # one block's residuals: what remat removes from one layer
    one_params = models.abstract_params(models.build_model(one_layer))
    kept, kept_weights, _ = _residuals(one_layer, tokens, one_params)
    whole, whole_weights, _ = _residuals(dataclasses.replace(one_layer, remat="none"), tokens,
                                         one_params)
    recompute, recompute_weights = whole - kept, whole_weights - kept_weights
  if _slot_read_recomputes(model_config):  # its probabilities, rebuilt in one layer's backward
    one_params = one_params or models.abstract_params(models.build_model(one_layer))
    plain = dataclasses.replace(one_layer, remat="none")
    kept, _, _ = _residuals(plain, tokens, one_params)
    whole, _, _ = _residuals(dataclasses.replace(plain, persistent_implementation="reference"),
                             tokens, one_params)
    recompute += whole - kept
  return dict(activations=saved - weights, retrieval_weights=weights,
              recompute=recompute - recompute_weights, recompute_weights=recompute_weights,
              weights_kept=weights_kept)


def _slot_read_recomputes(model_config) -> bool:
  """Whether v1's slot read runs its recomputing path (``kernels/slots.py``), whose backward
  pass rebuilds the (B, T, H, P x N) slot probabilities of one layer at a time."""
  if not isinstance(model_config, models.MosaicConfig) or model_config.version != 1:
    return False
  return slots.resolve_implementation(
      model_config.persistent_implementation, models.compute_dtype(model_config.dtype),
      model_config.head_dim, dropout_active=model_config.persistent_dropout > 0) == "recompute"


def one_device_table(preset: str, lengths: list[int], remats: list[str], batch: int = 1,
                     dtype: str = "bfloat16", **overrides) -> str:
  """Markdown: memory to train preset ``preset`` (with model field ``overrides``) on one device,
  per context length and remat, by ``training_memory`` with the default optimizer (AdamW)."""
  lines = ["| model | remat | tokens | parameters + AdamW + gradients | activations | "
           "recompute | fused total | retrieval T x T (XLA path) |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for remat in remats:
    for length in lengths:
      config = base_config()
      config.data.seq_len, config.data.batch_size = length, batch
      config.models[preset] = model_section(preset, dtype=dtype, remat=remat,
                                            context_length=length, **overrides)
      config.data.tokenizer.vocab_size = config.models[preset].vocab_size
      used = training_memory(config, preset, device_count=1)
      state = used.parameters + used.optimizer + used.gradients
      weights = used.retrieval_weights + used.recompute_weights
      lines.append(f"| {preset} | {remat} | {batch} x {length} | {state / GIB:.2f} | "
                   f"{used.activations / GIB:.2f} | {used.recompute / GIB:.2f} | "
                   f"{used.total(fused=True) / GIB:.2f} | {weights / GIB:.1f} |")
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
  values = flags.FLAGS
  print(one_device_table(values.model, [int(x) for x in values.lengths],
                         values.remat, values.batch))


if __name__ == "__main__":
  flags.DEFINE_string("model", "mosaic_v2_gpt2_small", "A preset of mosaics_jax.models.")
  flags.DEFINE_list("lengths", ["4096", "8192", "16384", "32768"],
                    "Context lengths, comma-separated: one row each.")
  flags.DEFINE_list("remat", ["block", "dots", "none"],
                    "Rematerialization policies, comma-separated: one row each.")
  flags.DEFINE_integer("batch", 1, "Sequences per device.")
  app.run(main)
