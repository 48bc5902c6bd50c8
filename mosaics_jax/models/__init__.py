"""Models: configs, constructors and parameter utilities.

    from mosaics_jax import models
    config = models.model_config("mosaic_v1_gpt2_small")
    model = models.build_model(config)
    params = models.init_params(model, jax.random.key(0))
    logits = model.apply({"params": params}, tokens)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from mosaics_jax.models.config import (PRESETS, ModelConfig, MosaicConfig, TransformerConfig,
                                       compute_dtype, config_from_dict, config_to_dict,
                                       model_config)
from mosaics_jax.models.mosaic import MosaicLM
from mosaics_jax.models.transformer import TransformerLM


def build_model(config: ModelConfig) -> nn.Module:
  """The Flax module for a config: ``MosaicLM`` or ``TransformerLM``."""
  if isinstance(config, MosaicConfig):
    return MosaicLM(config)
  if isinstance(config, TransformerConfig):
    return TransformerLM(config)
  raise TypeError(f"Expected a MosaicConfig or TransformerConfig, got {type(config).__name__}.")


def _init_tokens(model: nn.Module, length: int | None) -> jax.Array:
  length = length or min(model.config.context_length, 8)
  return jnp.zeros((1, length), jnp.int32)


def init_params(model: nn.Module, rng: jax.Array, length: int | None = None):
  """Float32 parameters (plain arrays, logical-axis boxes removed)."""
  variables = jax.jit(lambda rng: model.init(rng, _init_tokens(model, length)))(rng)
  return nn.unbox(variables["params"])


def _abstract_variables(model: nn.Module, length: int | None):
  # Key and tokens are made inside the trace: no concrete array, so this also works under a
  # mesh of devices the host does not have (an ahead-of-time compile).
  return jax.eval_shape(lambda: model.init(jax.random.key(0), _init_tokens(model, length)))


def abstract_params(model: nn.Module, length: int | None = None):
  """Shapes and dtypes of the parameters, without allocating them (``jax.eval_shape``)."""
  return nn.unbox(_abstract_variables(model, length)["params"])


def logical_axes(model: nn.Module):
  """PartitionSpecs of logical axis names, one per parameter (same tree as the params)."""
  return nn.get_partition_spec(_abstract_variables(model, None)["params"])


def count_params(params) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs); a tied embedding
  is one array, so it counts once."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(params)))


__all__ = ["PRESETS", "ModelConfig", "MosaicConfig", "TransformerConfig", "MosaicLM",
           "TransformerLM", "abstract_params", "build_model", "compute_dtype", "config_from_dict",
           "config_to_dict", "count_params", "init_params", "logical_axes", "model_config"]
