"""The stack of identical blocks: unrolled (``block_0`` ... ``block_{L-1}``) or scanned.

A model config's ``scan_layers`` chooses. Unrolled, the compiler sees L copies of the block:
compile time and host memory grow with depth (v2 large: 12 minutes and 22 GB for one compile).
Scanned (``flax.linen.scan``), it sees one block applied L times; every parameter (decoding
cache entry, sown intermediate) of the block gets a leading axis of size L under one name,
``blocks``, with the logical axis name ``layers`` (replicated, ``train/sharding.py``).
Both compute the same function; ``to_layout`` converts a parameter tree (or any tree with the
same dict structure: gradients, optimizer moments) from one layout to the other.

A block is ``cls(config, name=...)``, called as
``block(x, layer, positions, segment_ids, long_term_skip, deterministic, chunk)``: ``layer``
is the block's index (a Python int unrolled, a traced int32 under scan; initializers that
depend on depth read it), ``deterministic`` is static.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from mosaics_jax.layers import axes
from mosaics_jax.layers import common

SCANNED = "blocks"
_UNROLLED = re.compile(r"block_(\d+)")
_LAYER, _DETERMINISTIC = 2, 6  # argument positions in a block's __call__, counting self


def _with_remat(cls: type[nn.Module], remat: str, decoding: bool, scanned: bool):
  """``cls`` rematerialised with the policy named ``remat`` in training; as is when decoding.
  Unrolled, the layer index is static (Python initializers of depth); scanned, it is traced."""
  if remat == "none" or decoding:
    return cls
  static = (_DETERMINISTIC,) if scanned else (_LAYER, _DETERMINISTIC)
  # prevent_cse=False under scan, as flax recommends: the loop already keeps XLA from
  # merging the recomputation with the forward pass.
  return nn.remat(cls, policy=common.REMAT_POLICIES[remat], static_argnums=static,
                  prevent_cse=not scanned)


def _step(block, x, layer, *args):
  return block(x, layer, *args), None


def apply_blocks(cls: type[nn.Module], config, x, positions, segment_ids, long_term_skip,
                 deterministic: bool, chunk) -> jax.Array:
  """``config.num_layers`` blocks of ``cls`` applied to ``x`` in the layout of
  ``config.scan_layers``. Call inside the language model's compact method."""
  decoding = chunk is not None
  block = _with_remat(cls, config.remat, decoding, config.scan_layers)
  if not config.scan_layers or config.num_layers == 0:
    for layer in range(config.num_layers):
      x = block(config, name=f"block_{layer}")(x, layer, positions, segment_ids, long_term_skip,
                                               deterministic, chunk)
    return x
  scan = nn.scan(_step, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                 split_rngs={"params": True, "dropout": True},
                 in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast,
                          nn.broadcast),
                 length=config.num_layers, metadata_params={nn.PARTITION_NAME: axes.LAYERS})
  x, _ = scan(block(config, name=SCANNED), x, jnp.arange(config.num_layers, dtype=jnp.int32),
              positions, segment_ids, long_term_skip, deterministic, chunk)
  return x


def depth_scale(value, layer):
  """``value ** -0.5`` with ``value`` depending on ``layer``: a Python float for an int layer
  (the unrolled initializers, bit for bit as before), a traced float32 under scan."""
  if isinstance(layer, int):
    return 1.0 / math.sqrt(value)
  return jax.lax.rsqrt(jnp.asarray(value, jnp.float32))


def _unrolled_depth(tree: dict) -> int:
  return sum(1 for key in tree if _UNROLLED.fullmatch(str(key)))


def to_layout(tree, scanned: bool):
  """``tree`` with its blocks stacked under ``blocks`` (``scanned``) or split into
  ``block_i``; any nested dict holding blocks is converted (optimizer moments, gradients),
  and a tree already in the layout comes back as a copy of its dicts with the same arrays.
  Arrays are stacked with ``jnp``, so under ``jax.jit`` with output shardings the result is
  born sharded."""
  if not isinstance(tree, dict):
    return tree
  depth = _unrolled_depth(tree)
  if scanned and depth:
    blocks = [tree[f"block_{i}"] for i in range(depth)]
    rest = {k: to_layout(v, scanned) for k, v in tree.items() if not _UNROLLED.fullmatch(str(k))}
    return {**rest, SCANNED: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks)}
  if not scanned and SCANNED in tree:
    stacked = tree[SCANNED]
    depth = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    rest = {k: to_layout(v, scanned) for k, v in tree.items() if k != SCANNED}
    return {**rest, **{f"block_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
                       for i in range(depth)}}
  return {k: to_layout(v, scanned) for k, v in tree.items()}
