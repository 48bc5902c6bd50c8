"""The Memory Mosaic language model, v1 (ICLR 2025) and v2 ("Memory Mosaics at scale").

    tokens -> embedding -> N blocks -> final norm -> logits
    v1 block: x += ContextualMemory(LN(x));  x += PersistentMemory(LN(x))
    v2 block: x += LongShortMemory(N(x));    x += SwiGLU(N(x))

No positional encoding: order enters through the key recurrences, the value look-ahead and the
causal masks. ``segment_ids`` (B, T) separate documents packed in one row (and padding).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax.kernels.segments import positions_in_segment
from mosaics_jax.layers import axes
from mosaics_jax.layers import cache
from mosaics_jax.layers import common
from mosaics_jax.layers.contextual import ContextualMemory, LongShortMemory
from mosaics_jax.layers.persistent import FeedForward, PersistentMemory
from mosaics_jax.models import stack
from mosaics_jax.models.config import MosaicConfig, compute_dtype


def v1_inits(config: MosaicConfig) -> dict[str, common.Initializer]:
  """Library: N(0, 1/sqrt(fan_in)), output projections / sqrt(L), embedding 1/sqrt(d) (the tied
  matrix takes the head's init). nano: nanoGPT's 0.02 and 0.02/sqrt(2L)."""
  depth = max(config.num_layers, 1)  # no blocks: no output projection to scale
  if config.official_variant == "nano":
    return dict(proj=common.normal(0.02),
                out=common.normal(0.02 / math.sqrt(2 * depth)),
                embed=common.normal(0.02))
  std = config.embed_dim ** -0.5
  return dict(proj=common.normal(std), out=common.normal(std / math.sqrt(depth)),
              embed=common.normal(std))


def v2_inits(config: MosaicConfig, layer) -> dict[str, common.Initializer]:
  """v2 Table 6: truncated normals with std 1/sqrt(2 d (l+1)), 1/sqrt(2 d' (l+1)) for W2
  (``layer``: an int, or traced under a scanned stack)."""
  std = stack.depth_scale(2 * config.embed_dim * (layer + 1), layer)
  return dict(proj=common.truncated_normal(std), out=common.truncated_normal(std),
              ffn_out=common.truncated_normal(
                  stack.depth_scale(2 * config.ffn_hidden_dim * (layer + 1), layer)))


class MosaicBlock(nn.Module):
  """One block; called as ``models/stack.py`` says."""

  config: MosaicConfig

  @nn.compact
  def __call__(self, x, layer, positions, segment_ids, long_term_skip, deterministic,
               chunk=None):
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    norm = lambda name: common.norm(cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias,
                                    dtype=dtype, name=name)
    if cfg.version == 1:
      inits = v1_inits(cfg)
      kwargs = dict(num_heads=cfg.num_heads, proj_init=inits["proj"], out_init=inits["out"],
                    variant=cfg.official_variant, use_bias=cfg.use_bias,
                    residual_dropout=cfg.residual_dropout, dtype=dtype)
      x = x + ContextualMemory(weight_dropout=cfg.context_dropout,
                               implementation=cfg.retrieval_implementation, name="context",
                               **kwargs)(norm("context_norm")(x), segment_ids, deterministic,
                                         chunk)
      x = x + PersistentMemory(num_slots=cfg.persistent_slots, count=cfg.persistent_count,
                               prob_dropout=cfg.persistent_dropout,
                               implementation=cfg.persistent_implementation, name="persistent",
                               **kwargs)(norm("persistent_norm")(x), segment_ids, deterministic,
                                         chunk)
    else:
      inits = v2_inits(cfg, layer)
      x = x + LongShortMemory(
          num_heads=cfg.num_heads, short_term_window=cfg.short_term_window,
          proj_init=inits["proj"], out_init=inits["out"], short_term=cfg.short_term_memory,
          long_term=cfg.long_term_memory, use_bias=cfg.use_bias,
          residual_dropout=cfg.residual_dropout, dtype=dtype,
          implementation=cfg.retrieval_implementation, name="memory")(
              norm("memory_norm")(x), positions, segment_ids, long_term_skip, deterministic,
              chunk)
      x = x + FeedForward(cfg.ffn_hidden_dim, in_init=inits["proj"], out_init=inits["ffn_out"],
                          use_bias=cfg.use_bias, residual_dropout=cfg.residual_dropout,
                          dtype=dtype, name="ffn")(norm("ffn_norm")(x), deterministic)
    return nn.with_logical_constraint(x, axes.HIDDEN)


def decoding_inputs(module, tokens, segment_ids, deterministic: bool, decode: bool):
  """(chunk, positions in segment, segment ids) for the blocks; a chunk only when decoding."""
  length = tokens.shape[1]
  if not decode:
    return None, positions_in_segment(segment_ids, length), segment_ids
  if not deterministic:
    raise ValueError("decode=True is inference: call it with deterministic=True.")
  if segment_ids is None:
    segment_ids = jnp.ones(tokens.shape, jnp.int32)
  chunk, positions = cache.start_chunk(module, segment_ids)
  return chunk, positions, segment_ids


def long_term_skip_for_step(config, deterministic: bool, make_rng) -> int | jax.Array:
  """v2's m: U[lo, hi] drawn once per call in training (shared by every layer and sequence, so
  the fused kernels keep static shapes), the fixed evaluation value otherwise."""
  if deterministic:
    return config.long_term_skip_eval
  lo, hi = config.long_term_skip_train
  if lo == hi:
    return lo
  return jax.random.randint(make_rng("dropout"), (), lo, hi + 1)


class MosaicLM(nn.Module):
  """Memory Mosaic LM. ``__call__`` returns float32 logits (B, T, vocab)."""

  config: MosaicConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, segment_ids: jax.Array | None = None, *,
               deterministic: bool = True, long_term_skip: int | jax.Array | None = None,
               decode: bool = False, targets: jax.Array | None = None) -> jax.Array:
    """Args:
      tokens: (B, T) int token ids.
      segment_ids: optional (B, T) document ids; memories never read across documents.
      deterministic: False in training (dropout on, v2's m drawn from the 'dropout' rng).
      long_term_skip: v2 only: force m (e.g. to evaluate one value of m).
      decode: continue the sequence held in the 'cache' collection with this chunk (see
        ``layers/cache.py`` and ``mosaics_jax.generate``).
      targets: (B, T) next tokens: return their (B, T) float32 cross-entropies instead of the
        logits (``config.loss_chunk`` tokens at a time: what the trainer's loss calls).
    """
    cfg = self.config
    dtype = compute_dtype(cfg.dtype)
    chunk, positions, segment_ids = decoding_inputs(self, tokens, segment_ids, deterministic,
                                                    decode)
    embed_init = (v1_inits(cfg)["embed"] if cfg.version == 1
                  else common.truncated_normal((2 * cfg.embed_dim) ** -0.5))
    embed = common.token_embedding(cfg.vocab_size, cfg.embed_dim, init=embed_init, dtype=dtype)
    x = nn.with_logical_constraint(embed(tokens), axes.HIDDEN)
    x = nn.Dropout(cfg.embedding_dropout)(x, deterministic)
    if cfg.version == 2 and long_term_skip is None:
      long_term_skip = long_term_skip_for_step(cfg, deterministic, self.make_rng)
    x = stack.apply_blocks(MosaicBlock, cfg, x, positions, segment_ids, long_term_skip,
                           deterministic, chunk)
    # The official Library code (not nanoMosaics, not v2) scales the logits by 1/sqrt(d).
    library = cfg.version == 1 and cfg.official_variant == "library"
    return common.lm_logits(x, cfg, embed, init=embed_init, dtype=dtype,
                            scale=1 / math.sqrt(cfg.embed_dim) if library else 1.0,
                            targets=targets)
