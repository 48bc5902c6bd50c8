"""Contextual associative memories: the Memory Mosaics replacement for attention.

* ``ContextualMemory`` (v1): leaky-average keys, look-ahead values, one bandwidth per head,
  strictly causal retrieval, output projection.
* ``GatedMemory`` (v2): gated keys, look-ahead values, adaptive bandwidth
  beta(n) = beta1 n^alpha + beta0; a short-term memory (window h) or a long-term memory
  (skips the m most recent pairs), depending on ``window``.
* ``LongShortMemory`` (v2): both levels on the same input, outputs summed after their own
  projections, which equals the paper's W_o applied to the concatenation [y_long; y_short].
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
from mosaics_jax.layers.features import EXP_PARAM_SCALE, GatedKeys, LeakyKeys, LookAheadValues

V1_VARIANTS = ("library", "nano")


def v1_key_scale(param: jax.Array, *, power: int, variant: str) -> jax.Array:
  """The v1 bandwidth factor applied to unit keys, per head.

  Library (the paper's code): exp(min(10 p, 5)) ** power, i.e. the clamp acts per side.
  nanoMosaics: exp(min(power * 10 p, ln 65535)), the clamp acts on the whole exponent.
  The contextual memory scales both sides (power 1, kernel bandwidth exp(2 min(10 p, 5)));
  the persistent memory puts the whole bandwidth on the query (power 2).
  """
  if variant == "library":
    return jnp.exp(power * jnp.minimum(EXP_PARAM_SCALE * param, 5.0))
  if variant == "nano":
    return jnp.exp(jnp.minimum(power * EXP_PARAM_SCALE * param, math.log(65535.0)))
  raise ValueError(f"Unknown v1 variant {variant!r}; use one of {V1_VARIANTS}.")


class ContextualMemory(nn.Module):
  """v1 contextual memory (official ``InContextAssoMemBlock`` / nanoMosaics ``ContextMem``).

  y_t = W_o concat_h sum_{s<t} softmax_s(k_t . k_s) v_s, where k = unit key x exp(min(10 kb, 5))
  (the query is the key itself: the kernel is symmetric) and v = unit value x exp(10 vb).
  Position 0 reads an empty memory and outputs 0.
  """

  num_heads: int
  proj_init: common.Initializer
  out_init: common.Initializer
  variant: str = "library"
  use_bias: bool = False
  weight_dropout: float = 0.0
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None,
               deterministic: bool = True, chunk: cache.Chunk | None = None) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    keys = LeakyKeys(self.num_heads, head_dim, self.proj_init, self.use_bias, self.dtype,
                     name="keys")(x, segment_ids, chunk)
    key_scale = common.param_with_axes(self, "key_scale", nn.initializers.constant(0.1),
                                       (self.num_heads,), (axes.HEADS,))
    keys = keys * v1_key_scale(key_scale, power=1, variant=self.variant)[:, None]
    values, previous = _split(LookAheadValues(self.num_heads, head_dim, self.proj_init,
                                              self.use_bias, self.dtype,
                                              name="values")(x, segment_ids, chunk))
    value_scale = common.param_with_axes(self, "value_scale", nn.initializers.constant(-0.05),
                                         (self.num_heads,), (axes.HEADS,))
    value_scale = jnp.exp(EXP_PARAM_SCALE * value_scale)[:, None]
    values = values * value_scale
    self.sow("intermediates", "key_scaled", keys)
    self.sow("intermediates", "value_scaled", values)

    keys = nn.with_logical_constraint(keys.astype(self.dtype), axes.PER_HEAD)
    values = nn.with_logical_constraint(values.astype(self.dtype), axes.PER_HEAD)
    dropout = 0.0 if deterministic else self.weight_dropout
    if chunk is not None:
      out = cache.read(keys, keys, values, segment_ids, chunk, skip=1,
                       previous_value=previous * value_scale)
    else:
      if self.is_mutable_collection("intermediates"):  # attention analyses
        self.sow("intermediates", "last_query_weights",
                 retrieval.last_query_weights(keys, keys, skip=1, segment_ids=segment_ids))
      out = retrieval.retrieve(
          keys, keys, values, skip=1, segment_ids=segment_ids, dropout_rate=dropout,
          dropout_rng=self.make_rng("dropout") if dropout > 0.0 else None,
          implementation=self.implementation)
    out = nn.with_logical_constraint(out, axes.PER_HEAD)
    self.sow("intermediates", "heads_out", out)
    out = common.from_heads(width, init=self.out_init, use_bias=self.use_bias, dtype=self.dtype,
                            name="out")(out)
    return nn.Dropout(self.residual_dropout)(out, deterministic)


def _split(values):
  """LookAheadValues gives ``values`` in training, ``(values, previous)`` when decoding."""
  return values if isinstance(values, tuple) else (values, None)


class AdaptiveBandwidth(nn.Module):
  """v2 eq. 6: beta(n) = beta1 n^alpha + beta0, one triple per head.

  Reparametrised as in v2 Table 6: beta0 = exp(min(t0, 10)), beta1 = exp(min(t1, 10)),
  alpha = min(|ta|, 1), initialised at t0 = t1 = 1.5, ta = 1/3.
  """

  num_heads: int

  @nn.compact
  def __call__(self, pairs: jax.Array) -> jax.Array:
    """(B|1, T) visible-pair counts -> (B|1, T, H) bandwidths (float32)."""
    shape = (self.num_heads,)
    t0 = common.param_with_axes(self, "beta0", nn.initializers.constant(1.5), shape, (axes.HEADS,))
    t1 = common.param_with_axes(self, "beta1", nn.initializers.constant(1.5), shape, (axes.HEADS,))
    ta = common.param_with_axes(self, "alpha", nn.initializers.constant(1.0 / 3.0), shape,
                                (axes.HEADS,))
    # n = 0 means an empty memory (output 0 whatever beta is); max(n, 1) keeps d n^alpha finite.
    n = jnp.maximum(pairs, 1).astype(jnp.float32)[..., None]
    return jnp.exp(jnp.minimum(t1, 10.0)) * n ** jnp.minimum(jnp.abs(ta), 1.0) + jnp.exp(
        jnp.minimum(t0, 10.0))


class GatedMemory(nn.Module):
  """One v2 contextual memory level (v2 section 3).

  Short-term (``window=h``): pairs t-h+1 .. t-1. Long-term (``window=None``, ``skip=m``):
  pairs up to t-m. The query is beta(n_t) k_t with unit keys, n_t the number of pairs it sees.
  Values are scaled by alpha_psi = exp(min(|t|, 15)) (init t = 0). Returns (B, T, embed).
  """

  num_heads: int
  proj_init: common.Initializer
  out_init: common.Initializer
  window: int | None = None
  use_bias: bool = False
  out_bias: bool = False  # a bias on the output projection (LongShortMemory gives it to one level)
  dtype: Any = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
               skip, chunk: cache.Chunk | None = None) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    keys = GatedKeys(self.num_heads, head_dim, self.proj_init, self.use_bias, self.dtype,
                     name="keys")(x, segment_ids, chunk)
    values, previous = _split(LookAheadValues(self.num_heads, head_dim, self.proj_init,
                                              self.use_bias, self.dtype,
                                              name="values")(x, segment_ids, chunk))
    value_scale = common.param_with_axes(self, "value_scale", nn.initializers.zeros,
                                         (self.num_heads,), (axes.HEADS,))
    value_scale = jnp.exp(jnp.minimum(jnp.abs(value_scale), 15.0))[:, None]
    values = values * value_scale
    bandwidth = AdaptiveBandwidth(self.num_heads, name="bandwidth")(
        retrieval.visible_pairs(positions, skip, self.window))

    keys = nn.with_logical_constraint(keys.astype(self.dtype), axes.PER_HEAD)
    values = nn.with_logical_constraint(values.astype(self.dtype), axes.PER_HEAD)
    if chunk is not None:
      out = cache.read(keys, keys, values, segment_ids, chunk, skip=skip, window=self.window,
                       previous_value=previous * value_scale, query_scale=bandwidth)
    else:
      if self.is_mutable_collection("intermediates"):  # attention analyses
        self.sow("intermediates", "last_query_weights", retrieval.last_query_weights(
            keys, keys, skip=skip, window=self.window, segment_ids=segment_ids,
            query_scale=bandwidth))
      out = retrieval.retrieve(keys, keys, values, skip=skip, window=self.window,
                               segment_ids=segment_ids, query_scale=bandwidth,
                               implementation=self.implementation)
    out = nn.with_logical_constraint(out, axes.PER_HEAD)
    return common.from_heads(width, init=self.out_init, use_bias=self.out_bias,
                             dtype=self.dtype, name="out")(out)


class LongShortMemory(nn.Module):
  """v2's contextual memory: W_o [LTM(x); STM(x)] + b, written as W_long LTM(x) + W_short STM(x)
  + b, with ``b`` (``use_bias``) held by the short-term level's projection (the long-term one's
  without a short-term level).

  Either level can be left out (``short_term`` / ``long_term`` False), e.g. the paper's model
  without long-term memory.
  """

  num_heads: int
  short_term_window: int
  proj_init: common.Initializer
  out_init: common.Initializer
  short_term: bool = True
  long_term: bool = True
  use_bias: bool = False
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None,
               long_term_skip, deterministic: bool = True,
               chunk: cache.Chunk | None = None) -> jax.Array:
    out = jnp.zeros(x.shape, self.dtype)
    kwargs = dict(num_heads=self.num_heads, proj_init=self.proj_init, out_init=self.out_init,
                  use_bias=self.use_bias, dtype=self.dtype, implementation=self.implementation)
    if self.short_term:
      out += GatedMemory(window=self.short_term_window, out_bias=self.use_bias,
                         name="short_term", **kwargs)(x, positions, segment_ids, skip=1,
                                                      chunk=chunk)
    if self.long_term:
      out += GatedMemory(window=None, out_bias=self.use_bias and not self.short_term,
                         name="long_term", **kwargs)(x, positions, segment_ids,
                                                     skip=long_term_skip, chunk=chunk)
    return nn.Dropout(self.residual_dropout)(out, deterministic)
