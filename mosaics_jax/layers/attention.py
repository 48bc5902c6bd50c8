"""Softmax attention for the transformer baselines of both papers.

The baselines run through the same retrieval op as the memories
(``kernels.retrieval.retrieve``) with ``skip=0`` (ordinary causal attention, diagonal
included) and queries pre-scaled by 1/sqrt(d), so they get the same fused kernels.

Positions: learned absolute embeddings live in the model (GPT-2); ``rope`` rotates queries
and keys (RoPE, rotate-half form); ``alibi`` adds -slope_h (t - s) to the scores.
``LongShortAttention`` is the v2 paper's "transformer + long-short term attention" control:
one attention over a window of h tokens and one that skips the m most recent tokens.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax.kernels import retrieval
from mosaics_jax.layers import axes
from mosaics_jax.layers import cache
from mosaics_jax.layers import common


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding of (B, T, H, D) by (B|1, T) positions, rotate-half layout."""
  half = x.shape[-1] // 2
  frequencies = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None].astype(jnp.float32) * frequencies
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> list[float]:
  """Per-head ALiBi slopes (Press et al. 2022): a geometric sequence starting at 2^(-8/n)."""

  def geometric(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]

  if math.log2(num_heads).is_integer():
    return geometric(num_heads)
  closest = 2 ** math.floor(math.log2(num_heads))
  return geometric(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_bias(num_heads: int, length: int) -> jax.Array:
  """(1, H, T, T) additive scores -slope_h (t - s)."""
  distance = jnp.arange(length)[:, None] - jnp.arange(length)[None, :]
  slopes = jnp.asarray(alibi_slopes(num_heads), jnp.float32)
  return (-slopes[:, None, None] * distance.astype(jnp.float32))[None]


class Attention(nn.Module):
  """Multi-head causal attention; ``window`` and ``skip`` restrict the visible keys."""

  num_heads: int
  in_init: common.Initializer
  out_init: common.Initializer
  position: str = "learned"
  rope_theta: float = 10000.0
  window: int | None = None
  use_bias: bool = False
  weight_dropout: float = 0.0
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
               skip=0, deterministic: bool = True, chunk: cache.Chunk | None = None) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    kwargs = dict(init=self.in_init, use_bias=self.use_bias, dtype=self.dtype)
    query = common.to_heads(self.num_heads, head_dim, name="query", **kwargs)(x)
    key = common.to_heads(self.num_heads, head_dim, name="key", **kwargs)(x)
    value = common.to_heads(self.num_heads, head_dim, name="value", **kwargs)(x)
    if self.position == "rope":
      query = rope(query, positions, self.rope_theta)
      key = rope(key, positions, self.rope_theta)
    query = (query * head_dim ** -0.5).astype(self.dtype)
    query, key, value = (nn.with_logical_constraint(a, axes.PER_HEAD) for a in (query, key, value))
    dropout = 0.0 if deterministic else self.weight_dropout
    alibi = self.position == "alibi"
    if chunk is not None:
      slopes = jnp.asarray(alibi_slopes(self.num_heads), jnp.float32) if alibi else None
      out = cache.read(query, key, value, segment_ids, chunk, skip=skip, window=self.window,
                       alibi_slopes=slopes)
    else:
      bias = alibi_bias(self.num_heads, x.shape[1]) if alibi else None
      if self.is_mutable_collection("intermediates"):  # attention analyses
        self.sow("intermediates", "last_query_weights", retrieval.last_query_weights(
            query, key, skip=skip, window=self.window, segment_ids=segment_ids, bias=bias))
      out = retrieval.retrieve(
          query, key, value, skip=skip, window=self.window, segment_ids=segment_ids,
          bias=bias, dropout_rate=dropout,
          dropout_rng=self.make_rng("dropout") if dropout > 0.0 else None,
          implementation=self.implementation)
    out = nn.with_logical_constraint(out, axes.PER_HEAD)
    out = common.from_heads(width, init=self.out_init, use_bias=self.use_bias, dtype=self.dtype,
                            name="out")(out)
    return nn.Dropout(self.residual_dropout)(out, deterministic)


class LongShortAttention(nn.Module):
  """Attention split like v2's memories: ``short_term`` sees tokens t-h+1 .. t, ``long_term``
  sees tokens up to t-m; each has its own projections and the outputs are summed."""

  num_heads: int
  short_term_window: int
  in_init: common.Initializer
  out_init: common.Initializer
  position: str = "rope"
  rope_theta: float = 10000.0
  use_bias: bool = False
  weight_dropout: float = 0.0
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
               long_term_skip, deterministic: bool = True,
               chunk: cache.Chunk | None = None) -> jax.Array:
    kwargs = dict(num_heads=self.num_heads, in_init=self.in_init, out_init=self.out_init,
                  position=self.position, rope_theta=self.rope_theta, use_bias=self.use_bias,
                  weight_dropout=self.weight_dropout, dtype=self.dtype,
                  implementation=self.implementation)
    short = Attention(window=self.short_term_window, name="short_term", **kwargs)(
        x, positions, segment_ids, skip=0, deterministic=deterministic, chunk=chunk)
    long = Attention(window=None, name="long_term", **kwargs)(
        x, positions, segment_ids, skip=long_term_skip, deterministic=deterministic, chunk=chunk)
    return nn.Dropout(self.residual_dropout)(short + long, deterministic)
