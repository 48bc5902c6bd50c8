"""Small building blocks shared by the memories and the baselines.

Every parameter is created through these helpers, so each one is born with its logical axis
names (see ``axes.py``) and kept in float32 while the matmuls run in the compute dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax import losses
from mosaics_jax.layers import axes

Initializer = nn.initializers.Initializer


def normal(stddev: float) -> Initializer:
  return nn.initializers.normal(stddev)


def truncated_normal(stddev: float) -> Initializer:
  """N(0, stddev) truncated at +-3 stddev, not rescaled (v2 Table 6; torch trunc_normal_)."""
  return nn.initializers.truncated_normal(stddev, lower=-3.0, upper=3.0)


def linspace(start: float, stop: float) -> Initializer:
  """Per-head values spread evenly from start to stop (torch.linspace)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.linspace(start, stop, shape[0], dtype=dtype)

  return init


def uniform(low: float, high: float) -> Initializer:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, low, high)

  return init


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape, names) -> jax.Array:
  """A float32 parameter with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, names), shape, jnp.float32)


class ToHeads(nn.Module):
  """(..., embed) -> (..., heads, head_dim). Torch weight (H*d, C) <-> kernel (C, H, d).

  The kernel is created at its full 3-D shape so its logical names fit it (``nn.DenseGeneral``
  initialises a flat kernel and reshapes it, which breaks logical constraints under a mesh).
  """

  num_heads: int
  head_dim: int
  kernel_init: Initializer
  use_bias: bool
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = param_with_axes(self, "kernel", self.kernel_init,
                             (x.shape[-1], self.num_heads, self.head_dim),
                             (axes.EMBED, axes.HEADS, axes.HEAD_DIM))
    y = jnp.einsum("...c,chd->...hd", x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y += param_with_axes(self, "bias", nn.initializers.zeros, (self.num_heads, self.head_dim),
                           (axes.HEADS, axes.HEAD_DIM)).astype(self.dtype)
    return y


class FromHeads(nn.Module):
  """(..., heads, head_dim) -> (..., embed). Torch weight (C, H*d) <-> kernel (H, d, C)."""

  features: int
  kernel_init: Initializer
  use_bias: bool
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = param_with_axes(self, "kernel", self.kernel_init, (*x.shape[-2:], self.features),
                             (axes.HEADS, axes.HEAD_DIM, axes.EMBED))
    y = jnp.einsum("...hd,hdc->...c", x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y += param_with_axes(self, "bias", nn.initializers.zeros, (self.features,),
                           (axes.EMBED,)).astype(self.dtype)
    return y


def to_heads(num_heads: int, head_dim: int, *, init: Initializer, use_bias: bool, dtype,
             name: str) -> ToHeads:
  return ToHeads(num_heads, head_dim, init, use_bias, dtype, name=name)


def from_heads(features: int, *, init: Initializer, use_bias: bool, dtype, name: str) -> FromHeads:
  return FromHeads(features, init, use_bias, dtype, name=name)


def dense(features: int, in_axis: str, out_axis: str, *, init: Initializer, use_bias: bool,
          dtype, name: str) -> nn.Dense:
  """A plain (in, out) projection, e.g. embed -> mlp or embed -> heads (v2 gates)."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype,
      kernel_init=nn.with_logical_partitioning(init, (in_axis, out_axis)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)),
      name=name)


def norm(kind: str, *, eps: float, use_bias: bool, dtype, name: str) -> nn.Module:
  """LayerNorm (v1, GPT-2) or RMSNorm (v2, Llama); statistics in float32, two-pass variance."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,))
  if kind == "layer":
    return nn.LayerNorm(
        epsilon=eps, use_bias=use_bias, dtype=dtype, use_fast_variance=False,
        scale_init=scale_init,
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED,)),
        name=name)
  if kind == "rms":
    return nn.RMSNorm(epsilon=eps, dtype=dtype, scale_init=scale_init, name=name)
  raise ValueError(f"Unknown norm {kind!r}; use 'layer' or 'rms'.")


class TokenEmbed(nn.Embed):
  """``nn.Embed`` whose lookup reads the table gathered over its width (as FSDP gathers every
  weight before use). Looked up from the width-sharded table, the embeddings, and in the
  backward pass their batch-sharded gradient, would have to be resharded between batch and
  width, which XLA's SPMD partitioner does by replicating the whole tensor ("involuntary full
  rematerialization"); gathered, the lookup stays sharded by batch and the table's gradient
  is reduce-scattered."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError("Token ids must be integers.")
    table = self.embedding.astype(self.dtype or self.embedding.dtype)  # gather the cast copy
    return jnp.take(nn.with_logical_constraint(table, (axes.VOCAB, None)), inputs, axis=0)


def token_embedding(vocab_size: int, width: int, *, init: Initializer, dtype) -> nn.Embed:
  return TokenEmbed(vocab_size, width, dtype=dtype,
                    embedding_init=nn.with_logical_partitioning(init, (axes.VOCAB, axes.EMBED)),
                    name="token_embed")


def lm_logits(x: jax.Array, config, embed: nn.Embed, *, init: Initializer, dtype,
              scale: float = 1.0, targets: jax.Array | None = None) -> jax.Array:
  """Final norm, then the tied embedding (``embed.attend``) or an untied ``head``: float32
  (B, T, vocab) logits times ``scale``. With ``targets`` (B, T): the (B, T) float32 token
  cross-entropies instead, ``config.loss_chunk`` tokens at a time where that is set
  (``losses.chunked_token_losses``). Call inside the language model's compact method."""
  x = norm(config.norm, eps=config.norm_eps, use_bias=config.use_bias, dtype=dtype,
           name="final_norm")(x)
  head = None if config.tie_embeddings else dense(
      config.vocab_size, axes.EMBED, axes.VOCAB, init=init, use_bias=False, dtype=dtype,
      name="head")
  if targets is not None and config.loss_chunk:
    if head is None:
      weight = embed.embedding.T
    else:
      if head.is_initializing():
        head(x[:, :1])  # creates the kernel
      weight = nn.unbox(head.variables["params"]["kernel"])
    dtype = dtype or weight.dtype
    return losses.chunked_token_losses(x.astype(dtype), weight.astype(dtype), targets, scale,
                                       config.loss_chunk)
  logits = embed.attend(x) if head is None else head(x)
  logits = nn.with_logical_constraint(logits.astype(jnp.float32) * scale, axes.LOGITS)
  return logits if targets is None else losses.token_losses(logits, targets)


def unit_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """L2 normalisation over the last axis, in float32.

  The official code divides by the norm with no epsilon (NaN at 0); eps**2 under the root keeps
  the gradient finite and changes a vector of squared norm s by a factor of about eps**2/s.
  """
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps * eps)


# What the backward pass keeps of each block (a model config's ``remat``): everything
# (fastest, most memory), the outputs of the weight matmuls (the rest is recomputed), or only
# the block's input (the whole block is recomputed: about one more forward pass).
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "block": jax.checkpoint_policies.nothing_saveable,
}

