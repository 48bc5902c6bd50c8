"""Causal attention on Pallas splash attention (``jax.experimental.pallas.ops.tpu``), per shard.

The TPU kernel behind ``retrieval.retrieve_splash``, which turns a memory read into ordinary
causal attention by the shift trick (``retrieval.read_shifted``): here query row t reads keys
s <= t (splash's ``CausalMask``), or only t - reach <= s <= t (a ``LocalMask``: v2's
short-term window), and only keys of its own segment (splash's ``SegmentIds``). The bandwidth
is already in the queries (splash applies no 1/sqrt(d)). Nothing T x T is stored: splash keeps
per-row softmax statistics.

XLA cannot partition a Mosaic kernel, so under a mesh the kernel runs on each device's shard
(``target.per_shard``: batch over the rules' batch axes, heads over the heads axis), built for
the heads of one shard: every head has the same mask, so ``head_shards`` and
``q_seq_shards`` are 1 (the sequence is never split). Lengths must be multiples of 128,
splash's block. Off TPU it runs in Pallas interpret mode (slow, exact), which is how the tests
compare it with ``retrieval.retrieve_reference`` on a CPU, sharded or not.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as mask_info

from mosaics_jax.kernels import target

BLOCK = 128  # splash reads whole blocks of 128 positions
BLOCK_SIZES = (512, 256, 128)  # the largest that divides the length is used


def supports(length: int, has_bias: bool) -> bool:
  """Whether splash can read this call (no additive bias such as ALiBi, whole blocks)."""
  return not has_bias and length % BLOCK == 0


def _mask(length: int, reach: int | None):
  return (masks.CausalMask((length, length)) if reach is None else
          masks.LocalMask((length, length), window_size=(reach, 0), offset=0))


def _block(length: int) -> int:
  return next(b for b in BLOCK_SIZES if length % b == 0)


def _kernel(length: int, heads: int, reach: int | None, interpret: bool):
  """The splash kernel of one (length, heads, window reach) for (H, T, D) inputs. Built anew
  in each trace (its mask tables become constants of that program; splash caches the mask
  processing), since a kernel kept across traces would hold another program's constants."""
  block = _block(length)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  return splash.make_splash_mha(masks.MultiHeadMask([_mask(length, reach)] * heads),
                                block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)


# Matmuls per computed block: forward q k^T and p v; dq: q k^T, do v^T, ds k; dkv: q k^T,
# do v^T, p^T do, ds^T q.
MATMULS = {"fwd": 2, "dq": 3, "dkv": 4}


@functools.lru_cache(maxsize=64)
def computed_blocks(length: int, reach: int | None) -> int:
  """Blocks of one head's (T x T) mask that splash computes (the others are skipped; a partly
  masked block is computed whole): the same for its forward and backward passes."""
  info, _ = mask_info.process_mask(masks.MultiHeadMask([_mask(length, reach)]),
                                   (_block(length),) * 2, head_shards=1, q_seq_shards=1)
  return int(np.count_nonzero(info.block_mask))


def kernel_flops(shape, reach: int | None) -> dict[str, float]:
  """FLOPs of each pass of splash on (B, T, H, D) inputs: per computed block, one
  block x block matmul of depth D per matmul of the pass (``MATMULS``)."""
  batch, length, heads, head_dim = shape
  per_matmul = 2.0 * batch * heads * computed_blocks(length, reach) * _block(length) ** 2 * head_dim
  return {name: count * per_matmul for name, count in MATMULS.items()}


def causal_attention(queries, keys, values, *, reach: int | None = None,
                     query_segments: jax.Array | None = None,
                     key_segments: jax.Array | None = None,
                     interpret: bool = False) -> jax.Array:
  """(B, T, H, D) causal attention, no scaling; ``reach``: keys at most that far back (None:
  all); segments (B, T): keys of the query's segment only (both or neither)."""
  length = queries.shape[1]
  if not supports(length, has_bias=False):
    raise ValueError(f"splash reads lengths in multiples of {BLOCK}, got {length}.")

  def on_shard(q, k, v, q_ids, kv_ids):
    kernel = _kernel(length, q.shape[2], reach, interpret)
    target.record_kernel_flops("splash_mha", kernel_flops(q.shape, reach))
    by_head = lambda x: jnp.swapaxes(x, 1, 2)  # (B, T, H, D) <-> (B, H, T, D)
    q, k, v = by_head(q), by_head(k), by_head(v)
    if q_ids is None:
      return by_head(jax.vmap(kernel)(q, k, v))
    ids = splash.SegmentIds(q=q_ids.astype(jnp.int32), kv=kv_ids.astype(jnp.int32))
    return by_head(jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids))

  per_head = ("batch", "length", "heads", "head_dim")
  if query_segments is not None:
    query_segments = jnp.broadcast_to(query_segments, queries.shape[:2])
    key_segments = jnp.broadcast_to(key_segments, queries.shape[:2])
  return target.per_shard(on_shard, (queries, keys, values, query_segments, key_segments),
                          (per_head,) * 3 + (("batch", "length"),) * 2)
