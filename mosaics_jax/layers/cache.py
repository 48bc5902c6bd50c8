"""Decoding caches: what the memories keep between chunks of a sequence.

Decoding feeds a sequence in chunks (a prompt, then one token at a time). For a chunk at
absolute positions p0 .. p0+L-1:

* key recurrences continue from the state after p0-1 (``features``);
* a value peeks one token ahead, so the value of pair p0-1 is completed only now, from the
  chunk's first token ("stored one step late"); the value of the chunk's last pair waits for the
  next chunk. Queries never read it early: query t reads pairs s <= t-1;
* each memory stores its pairs in a ``PairCache``: the pair at position p lives in slot
  p mod size, so a full memory has one slot per position and v2's short-term memory (window h)
  a ring of h slots.

Caches are created by ``model.init(..., decode=True)`` with tokens of the maximum length, and
updated by ``model.apply(..., decode=True, mutable=["cache"])``.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mosaics_jax.kernels import retrieval, segments


@flax.struct.dataclass
class Chunk:
  """Where a decoding chunk sits in its sequence."""

  positions: jax.Array  # (L,) absolute positions p0 .. p0+L-1
  previous_segment: jax.Array  # (B,) segment of the token at p0-1; -1 before the first chunk


class PairCache(nn.Module):
  """The pairs a memory has stored: slots of keys, values, positions (-1: empty), segments.

  ``window``: a ring of ``window`` slots (pairs older than the window are never read); None:
  one slot per position of the longest sequence (the length ``model.init`` saw).
  """

  window: int | None = None

  @nn.compact
  def __call__(self, keys, values, segments, chunk: Chunk, previous_value=None):
    """All pairs this chunk may read (stored ones, then the chunk's own), as (keys, values,
    positions, segments); stores the chunk. ``previous_value`` completes pair p0-1."""
    batch, length, heads, dim = keys.shape
    size = length if self.window is None else min(self.window, length)  # at creation only
    stored_keys = self.variable("cache", "keys", jnp.zeros, (batch, size, heads, dim), keys.dtype)
    stored_values = self.variable("cache", "values", jnp.zeros, (batch, size, heads, dim),
                                  values.dtype)
    stored_positions = self.variable("cache", "positions",
                                     lambda: jnp.full((size,), -1, jnp.int32))
    stored_segments = self.variable("cache", "segments",
                                    lambda: jnp.full((batch, size), -1, jnp.int32))
    size = stored_positions.value.shape[0]
    old_values = stored_values.value
    if previous_value is not None:  # slot of p0-1; empty (position -1) before the first chunk
      old_values = old_values.at[:, (chunk.positions[0] - 1) % size].set(
          previous_value.astype(old_values.dtype))
    readable = (jnp.concatenate([stored_keys.value, keys], axis=1),
                jnp.concatenate([old_values, values], axis=1),
                jnp.concatenate([stored_positions.value, chunk.positions]),
                jnp.concatenate([stored_segments.value, segments], axis=1))
    if not self.is_initializing():
      kept = min(length, size)
      slots = chunk.positions[-kept:] % size
      stored_keys.value = stored_keys.value.at[:, slots].set(keys[:, -kept:])
      stored_values.value = old_values.at[:, slots].set(values[:, -kept:])
      stored_positions.value = stored_positions.value.at[slots].set(chunk.positions[-kept:])
      stored_segments.value = stored_segments.value.at[:, slots].set(segments[:, -kept:])
    return readable


def read(queries, keys, values, segment_ids, chunk: Chunk, *, skip, window=None,
         previous_value=None, query_scale=None, alibi_slopes=None) -> jax.Array:
  """Store a chunk's pairs in a ``PairCache`` named ``cache`` and answer its queries.

  Call inside a memory's (or attention's) compact method; mirrors ``retrieval.retrieve``."""
  all_keys, all_values, positions, segments = PairCache(window, name="cache")(
      keys, values, segment_ids, chunk, previous_value)
  bias = None
  if alibi_slopes is not None:
    distance = (chunk.positions[:, None] - positions[None, :]).astype(jnp.float32)
    bias = -alibi_slopes[None, :, None, None] * distance[None, None]
  return retrieval.retrieve_reference(
      queries, all_keys, all_values, skip=skip, window=window, segment_ids=segment_ids,
      key_segment_ids=segments, query_positions=chunk.positions, key_positions=positions,
      query_scale=query_scale, bias=bias)


class CacheOverflow(ValueError):
  """Decoding past the length a cache was made for."""


def _past_the_cache(end, capacity) -> None:
  raise CacheOverflow(
      f"Decoding to {int(end)} tokens, past the {int(capacity)} this decoding cache holds: "
      f"create it for the whole sequence, generate.init_cache(model, batch, max_length="
      f"{int(end)}) or more (prompt length + new tokens).")


def start_chunk(module: nn.Module, segment_ids: jax.Array) -> tuple[Chunk, jax.Array]:
  """Model-level bookkeeping of a decoding chunk: where it sits, and the positions of its
  tokens inside their segments; advances the cached index. Call in the model's compact method."""
  batch, length = segment_ids.shape
  index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
  segment_tail = module.variable("cache", "segment_tail",
                                 lambda: jnp.full((batch,), -1, jnp.int32))
  position_tail = module.variable("cache", "position_tail",
                                  lambda: jnp.full((batch,), -1, jnp.int32))
  # The longest sequence the cache holds: the length ``model.init`` saw. Past it a full
  # memory's slots would be overwritten (slot p mod size) while v2's beta(n) still counted
  # the lost pairs, so going past it is an error.
  capacity = module.variable("cache", "capacity", lambda: jnp.asarray(length, jnp.int32))
  chunk = Chunk(index.value + jnp.arange(length, dtype=jnp.int32), segment_tail.value)
  positions = segments.positions_in_segment(segment_ids, length, segment_tail.value,
                                            position_tail.value)
  if not module.is_initializing():
    end = index.value + length
    jax.lax.cond(end > capacity.value,
                 lambda: jax.debug.callback(_past_the_cache, end, capacity.value),
                 lambda: None)
    index.value = end
    segment_tail.value = segment_ids[:, -1]
    position_tail.value = positions[:, -1]
  return chunk, positions
