"""Transformer baselines: GPT-2 (learned positions, RoPE or ALiBi) and Llama-style models.

    tokens -> embedding (+ learned positions) -> N blocks -> final norm -> logits
    block: x += Attention(N(x)); x += MLP(N(x))      (pre-norm, as the Memory Mosaics)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax.layers import axes
from mosaics_jax.layers import common
from mosaics_jax.layers.attention import Attention, LongShortAttention
from mosaics_jax.layers.persistent import FeedForward
from mosaics_jax.models import stack
from mosaics_jax.models.config import TransformerConfig, compute_dtype
from mosaics_jax.models.mosaic import decoding_inputs, long_term_skip_for_step


def transformer_inits(config: TransformerConfig, layer) -> dict[str, common.Initializer]:
  """gpt2: nanoGPT's N(0, 0.02), residual projections 0.02/sqrt(2L) (the official baseline).
  v2: the v2 paper's Table 6 (its transformers share the Memory Mosaics recipe)."""
  if config.init == "gpt2":
    out = common.normal(0.02 / math.sqrt(2 * max(config.num_layers, 1)))
    return dict(proj=common.normal(0.02), out=out, mlp_out=out, embed=common.normal(0.02))
  std = stack.depth_scale(2 * config.embed_dim * (layer + 1), layer)
  return dict(proj=common.truncated_normal(std), out=common.truncated_normal(std),
              mlp_out=common.truncated_normal(
                  stack.depth_scale(2 * config.hidden_dim * (layer + 1), layer)),
              embed=common.truncated_normal((2 * config.embed_dim) ** -0.5))


class TransformerBlock(nn.Module):
  """One block; called as ``models/stack.py`` says."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x, layer, positions, segment_ids, long_term_skip, deterministic,
               chunk=None):
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    inits = transformer_inits(cfg, layer)
    norm = lambda name: common.norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias,
                                    dtype=dtype, name=name)
    kwargs = dict(num_heads=cfg.num_heads, in_init=inits["proj"], out_init=inits["out"],
                  position=cfg.position, rope_theta=cfg.rope_theta, use_bias=cfg.use_bias,
                  weight_dropout=cfg.attention_dropout, residual_dropout=cfg.residual_dropout,
                  dtype=dtype, implementation=cfg.retrieval_implementation)
    hidden = norm("attention_norm")(x)
    if cfg.long_short_attention:
      x = x + LongShortAttention(short_term_window=cfg.short_term_window, name="attention",
                                 **kwargs)(hidden, positions, segment_ids, long_term_skip,
                                           deterministic, chunk)
    else:
      x = x + Attention(name="attention", **kwargs)(hidden, positions, segment_ids,
                                                    deterministic=deterministic, chunk=chunk)
    x = x + FeedForward(cfg.hidden_dim, in_init=inits["proj"], out_init=inits["mlp_out"],
                        activation=cfg.mlp, use_bias=cfg.use_bias,
                        residual_dropout=cfg.residual_dropout, dtype=dtype,
                        name="mlp")(norm("mlp_norm")(x), deterministic)
    return nn.with_logical_constraint(x, axes.HIDDEN)


class TransformerLM(nn.Module):
  """Transformer LM with the same call signature as ``MosaicLM``; returns float32 logits (or,
  given ``targets``, their token cross-entropies)."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, segment_ids: jax.Array | None = None, *,
               deterministic: bool = True, long_term_skip: int | jax.Array | None = None,
               decode: bool = False, targets: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    length = tokens.shape[1]
    chunk, positions, segment_ids = decoding_inputs(self, tokens, segment_ids, deterministic,
                                                    decode)
    embed_init = transformer_inits(cfg, 0)["embed"]
    embed = common.token_embedding(cfg.vocab_size, cfg.embed_dim, init=embed_init, dtype=dtype)
    x = embed(tokens)
    if cfg.position == "learned":
      if not decode and length > cfg.context_length:
        raise ValueError(f"Sequence length {length} exceeds the {cfg.context_length} learned "
                         "positions of this model; use a shorter input or RoPE/ALiBi positions.")
      table = common.param_with_axes(self, "position_embed", embed_init,
                                     (cfg.context_length, cfg.embed_dim), (None, axes.EMBED))
      x = x + jnp.take(table, positions, axis=0).astype(dtype)
    x = nn.with_logical_constraint(x, axes.HIDDEN)
    x = nn.Dropout(cfg.embedding_dropout)(x, deterministic)
    if cfg.long_short_attention and long_term_skip is None:
      long_term_skip = long_term_skip_for_step(cfg, deterministic, self.make_rng)
    x = stack.apply_blocks(TransformerBlock, cfg, x, positions, segment_ids, long_term_skip,
                           deterministic, chunk)
    return common.lm_logits(x, cfg, embed, init=embed_init, dtype=dtype, targets=targets)
