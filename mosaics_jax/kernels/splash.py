"""The TPU path of retrieval: Pallas splash attention (``jax.experimental.pallas.ops.tpu``).

The same shift trick as ``retrieval.retrieve_fused``: queries are rolled back by ``skip`` (a
traced skip too, so v2's stochastic m needs no bucketing), where splash's ``CausalMask`` admits
exactly the pairs s <= t - skip; a window becomes a ``LocalMask`` reaching ``window - skip - 1``
pairs back; packed documents become splash's ``SegmentIds``; the bandwidth is already in the
queries (splash applies no 1/sqrt(d)). Outputs are rolled forward and the rows that read no
pair are zeroed. Nothing T x T is ever stored: splash keeps per-row softmax statistics.

The sequence length must be a multiple of 128, splash's block;
``retrieval.resolve_implementation`` picks this path on TPU when it is. Off TPU it runs in Pallas interpret mode (slow, exact),
which is how the tests compare it with ``retrieval.retrieve_reference`` on a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

from mosaics_jax.kernels.retrieval import (SPLASH_BLOCK as BLOCK, scaled_queries,
                                          shifted_reach, unshift)

BLOCK_SIZES = (512, 256, 128)  # the largest that divides the length is used


def supports(length: int, has_bias: bool) -> bool:
  """Whether splash can read this memory (no additive bias such as ALiBi, whole blocks)."""
  return not has_bias and length % BLOCK == 0


@functools.lru_cache(maxsize=64)
def _kernel(length: int, heads: int, reach: int | None, interpret: bool):
  """The splash kernel of one (length, heads, window reach) for (H, T, D) inputs."""
  mask = (masks.CausalMask((length, length)) if reach is None else
          masks.LocalMask((length, length), window_size=(reach, 0), offset=0))
  block = next(b for b in BLOCK_SIZES if length % b == 0)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  return splash.make_splash_mha(masks.MultiHeadMask([mask] * heads), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)


def retrieve_splash(queries, keys, values, *, skip=1, window=None, segment_ids=None,
                    query_scale=None, interpret: bool | None = None) -> jax.Array:
  """``retrieval.retrieve`` on splash attention; ``interpret`` defaults to "not on a TPU"."""
  batch, length, heads, _ = queries.shape
  if not supports(length, has_bias=False):
    raise ValueError(f"The splash path needs a length that is a multiple of {BLOCK}, got "
                     f"{length}; use implementation='xla' (or None: automatic).")
  reach = shifted_reach(skip, window)
  if reach is not None and reach < 0:
    return jnp.zeros_like(values)
  interpret = jax.default_backend() != "tpu" if interpret is None else interpret
  kernel = _kernel(length, heads, reach, interpret)
  by_head = lambda x: jnp.swapaxes(x, 1, 2)  # (B, T, H, D) <-> (B, H, T, D)
  q = by_head(jnp.roll(scaled_queries(queries, query_scale), -skip, axis=1))
  k, v = by_head(keys.astype(q.dtype)), by_head(values.astype(q.dtype))
  if segment_ids is None:
    out = jax.vmap(kernel)(q, k, v)
  else:
    ids = splash.SegmentIds(q=jnp.roll(segment_ids, -skip, axis=1).astype(jnp.int32),
                            kv=jnp.broadcast_to(segment_ids, (batch, length)).astype(jnp.int32))
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids)
  return unshift(by_head(out), skip, window, segment_ids).astype(values.dtype)
