"""v1's slot read as one Pallas kernel: the slot probabilities never leave the chip's memory.

The slot read (``kernels/slots.py``) is attention of every token over all N learned slots of
its head, with dropout on the probabilities (the v1 recipe's 5%). On a TPU, XLA writes the
(B, T, H, N) scores and probabilities to HBM and reads them back, several times in the
backward pass: about half of v1's HBM traffic (docs/scaling.md). Here a block of 128 queries
of one head reads all of its slots in VMEM (N = 2,688 slots of 64 numbers are 0.7 MB), so the
scores, the softmax and the dropout mask exist only there. Forward: the output and each row's
log-sum-exp. Backward, one kernel: it recomputes each block's probabilities from the saved
log-sum-exp, writes the queries' gradient and accumulates the slots' gradients over the batch
and the query blocks in VMEM, written once.

Dropout is applied in the kernel. Its mask comes from a counter-based hash of (seed, batch
row, head, memory, token, slot), not from the TPU's stateful PRNG: the backward pass replays
exactly the forward's bits whatever the order of its blocks, and ``dropout_mask`` computes
the same mask outside the kernel (what the tests compare with). Another draw than the
reference's ``jax.random.bernoulli``, from the same distribution.

Off TPU the kernel runs in Pallas interpret mode (exact, slow): the tests on a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from mosaics_jax.kernels import target

KERNELS = "slot_read"  # the kernels' names: slot_read_fwd, slot_read_bwd
BLOCK_Q = 128  # queries per block
SLOT_ALIGN = 128  # slots are padded to a whole number of lanes
_MIX = (0x7FEB352D, -2073254261)  # lowbias32's multipliers (0x846CA68B as int32)


def _hash(x: jax.Array) -> jax.Array:
  """lowbias32 (C. Wellons) on int32 bits: wrapping multiplies, logical shifts."""
  shift = jax.lax.shift_right_logical
  x = x ^ shift(x, jnp.int32(16))
  x = x * jnp.int32(_MIX[0])
  x = x ^ shift(x, jnp.int32(15))
  x = x * jnp.int32(_MIX[1])
  return x ^ shift(x, jnp.int32(16))


def _keep(seed, stream, rows, cols, padded_slots: int, rate: float) -> jax.Array:
  """Whether each (token ``rows``, slot ``cols``) probability of ``stream`` is kept."""
  key = _hash(seed ^ _hash(stream * jnp.int32(-1640531535) + jnp.int32(1)))  # golden ratio
  bits = _hash(key ^ (rows * jnp.int32(padded_slots) + cols))
  threshold = jnp.int32(min(int(rate * 2 ** 31), 2 ** 31 - 1))
  return jax.lax.shift_right_logical(bits, jnp.int32(1)) >= threshold


def dropout_mask(seed: jax.Array, batch: int, heads: int, count: int, length: int,
                 slots: int, rate: float) -> jax.Array:
  """(B, H, P, T, N) bool: the kernel's mask, computed outside it (for tests)."""
  padded = _padded(slots)
  stream = (jnp.arange(batch)[:, None, None] * heads + jnp.arange(heads)[None, :, None]) * count
  stream = (stream + jnp.arange(count)[None, None, :]).astype(jnp.int32)
  rows = jnp.arange(length, dtype=jnp.int32)[:, None]
  cols = jnp.arange(slots, dtype=jnp.int32)[None, :]
  return jax.vmap(jax.vmap(jax.vmap(lambda s: _keep(seed, s, rows, cols, padded, rate))))(stream)


def _padded(slots: int) -> int:
  return -(-slots // SLOT_ALIGN) * SLOT_ALIGN


def _probabilities(ids_ref, q, k, lse, rows, *, slots, rate, heads, count):
  """Scores of a query block against all slots, softmax (from ``lse`` if given), dropout:
  (kept probabilities scaled by 1 / (1 - rate), the softmax, the log-sum-exp)."""
  scores = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)
  cols = jax.lax.broadcasted_iota(jnp.int32, scores.shape, 1)
  scores = jnp.where(cols < slots, scores, -jnp.inf)
  if lse is None:
    top = jnp.max(scores, axis=1, keepdims=True)
    lse = top + jnp.log(jnp.sum(jnp.exp(scores - top), axis=1, keepdims=True))
  probs = jnp.exp(scores - lse)
  kept = probs
  if rate > 0.0:  # ids: the seed, then the shard's global batch rows, then its global heads
    batch_rows = pl.num_programs(2)
    row, head = ids_ref[1 + pl.program_id(2)], ids_ref[1 + batch_rows + pl.program_id(0)]
    stream = (row * heads + head) * count + pl.program_id(1)
    keep = _keep(ids_ref[0], stream, rows, cols, scores.shape[1], rate)
    kept = jnp.where(keep, probs / (1.0 - rate), 0.0)
  return kept, probs, lse


def _forward_kernel(ids_ref, q_ref, k_ref, v_ref, out_ref, lse_ref, *, slots, rate, heads,
                    count):
  q, k, v = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0]
  rows = pl.program_id(3) * q.shape[0] + jax.lax.broadcasted_iota(jnp.int32, (q.shape[0], 1), 0)
  kept, _, lse = _probabilities(ids_ref, q, k, None, rows, slots=slots, rate=rate,
                                heads=heads, count=count)
  out = jnp.dot(kept.astype(v.dtype), v, preferred_element_type=jnp.float32)
  out_ref[0, 0, 0] = out.astype(out_ref.dtype)
  lse_ref[0, 0, 0] = lse


def _backward_kernel(ids_ref, q_ref, k_ref, v_ref, lse_ref, grad_ref, delta_ref, dq_ref,
                     dk_ref, dv_ref, *, slots, rate, heads, count):
  q, k, v = q_ref[0, 0], k_ref[0, 0], v_ref[0, 0]
  grad = grad_ref[0, 0, 0]
  rows = pl.program_id(3) * q.shape[0] + jax.lax.broadcasted_iota(jnp.int32, (q.shape[0], 1), 0)
  kept, probs, _ = _probabilities(ids_ref, q, k, lse_ref[0, 0, 0], rows, slots=slots,
                                  rate=rate, heads=heads, count=count)
  # out = kept @ v, kept = probs * mask / (1 - rate): d kept = grad v^T; the softmax's
  # Jacobian needs sum_j probs_j d probs_j = sum_j kept_j d kept_j = grad . out (delta).
  d_kept = jax.lax.dot_general(grad.astype(v.dtype), v, (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)
  d_probs = d_kept if rate == 0.0 else jnp.where(kept != 0.0, d_kept / (1.0 - rate), 0.0)
  d_scores = probs * (d_probs - delta_ref[0, 0, 0])
  dq_ref[0, 0, 0] = jnp.dot(d_scores.astype(k.dtype), k,
                            preferred_element_type=jnp.float32).astype(dq_ref.dtype)

  @pl.when((pl.program_id(2) == 0) & (pl.program_id(3) == 0))
  def _():
    dk_ref[...] = jnp.zeros_like(dk_ref)
    dv_ref[...] = jnp.zeros_like(dv_ref)

  contract_rows = (((0,), (0,)), ((), ()))
  dk_ref[0, 0] += jax.lax.dot_general(d_scores.astype(q.dtype), q, contract_rows,
                                      preferred_element_type=jnp.float32)
  dv_ref[0, 0] += jax.lax.dot_general(kept.astype(grad.dtype), grad, contract_rows,
                                      preferred_element_type=jnp.float32)


def _calls(shape, count, slots, heads, rate, interpret):
  """The forward and backward ``pallas_call``s for one shard's (B, H, T, D) queries, T a
  multiple of the block, and (P, H, N', D) slots padded to N'; ``heads``: the model's."""
  batch, local_heads, length, head_dim = shape
  block, padded = min(BLOCK_Q, length), _padded(slots)
  grid = (local_heads, count, batch, length // block)  # head h, memory p, row b, block i
  ids = pl.BlockSpec(memory_space=pltpu.SMEM)
  query = pl.BlockSpec((1, 1, block, head_dim), lambda h, p, b, i: (b, h, i, 0))
  slot = pl.BlockSpec((1, 1, padded, head_dim), lambda h, p, b, i: (p, h, 0, 0))
  per_memory = lambda last: pl.BlockSpec((1, 1, 1, block, last),
                                         lambda h, p, b, i: (b, h, p, i, 0))
  per_memory_shape = lambda last: jax.ShapeDtypeStruct((batch, local_heads, count, length, last),
                                                       jnp.float32)
  slots_shape = jax.ShapeDtypeStruct((count, local_heads, padded, head_dim), jnp.float32)
  options = dict(slots=slots, rate=rate, heads=heads, count=count)
  forward = pl.pallas_call(
      functools.partial(_forward_kernel, **options), grid=grid, name=f"{KERNELS}_fwd",
      in_specs=[ids, query, slot, slot], out_specs=[per_memory(head_dim), per_memory(1)],
      out_shape=[per_memory_shape(head_dim), per_memory_shape(1)],
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 4),
      interpret=interpret)
  backward = pl.pallas_call(
      functools.partial(_backward_kernel, **options), grid=grid, name=f"{KERNELS}_bwd",
      in_specs=[ids, query, slot, slot, per_memory(1), per_memory(head_dim), per_memory(1)],
      out_specs=[per_memory(head_dim), slot, slot],
      out_shape=[per_memory_shape(head_dim), slots_shape, slots_shape],
      # The slots' gradients accumulate over the batch rows and the query blocks.
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "arbitrary", "arbitrary")),
      interpret=interpret)
  return forward, backward


def read_slots(queries: jax.Array, slot_keys: jax.Array, slot_values: jax.Array,
               dropout_rng: jax.Array | None = None, dropout_rate: float = 0.0,
               interpret: bool | None = None) -> jax.Array:
  """``slots.read_slots_reference`` in one kernel per pass: (B, T, H, D) queries, (P, H, N, D)
  slots; (B, T, H, D) float32, the mean over the P memories. Under a mesh it runs on each
  device's shard (batch and heads split as the model's rules say)."""
  interpret = target.platform() != "tpu" if interpret is None else interpret
  if dropout_rate > 0.0 and dropout_rng is None:
    raise ValueError("slot dropout_rate > 0 needs a dropout_rng.")
  seed = (jax.random.bits(dropout_rng, (1,), jnp.uint32).astype(jnp.int32)
          if dropout_rate > 0.0 else jnp.zeros((1,), jnp.int32))
  heads = queries.shape[2]

  def on_shard(q, keys, values, rows, head_ids):
    return _read(q, keys, values, jnp.concatenate([seed, rows, head_ids]), heads,
                 dropout_rate, interpret)

  # Each shard's global batch rows and heads: the same mask on any mesh.
  rows, head_ids = jnp.arange(queries.shape[0], dtype=jnp.int32), jnp.arange(heads, dtype=jnp.int32)
  per_head = (None, "heads", None, "head_dim")
  return target.per_shard(on_shard, (queries, slot_keys, slot_values, rows, head_ids),
                          (("batch", "length", "heads", "head_dim"), per_head, per_head,
                           ("batch",), ("heads",)))


def _read(queries, slot_keys, slot_values, ids, heads, rate, interpret):
  """One shard: pads the length to whole blocks and the slots to whole lanes."""
  length = queries.shape[1]
  count, _, slots, _ = slot_keys.shape
  block = min(BLOCK_Q, -(-length // 8) * 8)
  padded_length = -(-length // block) * block
  q = jnp.pad(jnp.swapaxes(queries, 1, 2), ((0, 0), (0, 0), (0, padded_length - length),
                                            (0, 0)))
  pad_slots = ((0, 0), (0, 0), (0, _padded(slots) - slots), (0, 0))
  keys = jnp.pad(slot_keys.astype(q.dtype), pad_slots)
  values = jnp.pad(slot_values.astype(q.dtype), pad_slots)
  # Per (row, head, memory, query): the forward's 2 matmuls over the slots, the backward's 5
  # (scores again, the gradients of the kept probabilities, queries, keys and values).
  per_matmul = 2.0 * q.shape[0] * q.shape[1] * count * padded_length * keys.shape[2] * q.shape[3]
  target.record_kernel_flops(KERNELS, {"fwd": 2 * per_matmul, "bwd": 5 * per_matmul})
  out = _fused(q, keys, values, ids, slots, count, heads, rate, interpret)
  return jnp.swapaxes(out[:, :, :length], 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _fused(q, keys, values, ids, slots, count, heads, rate, interpret):
  return _fused_forward(q, keys, values, ids, slots, count, heads, rate, interpret)[0]


def _fused_forward(q, keys, values, ids, slots, count, heads, rate, interpret):
  forward, _ = _calls(q.shape, count, slots, heads, rate, interpret)
  out, lse = forward(ids, q, keys, values)
  return out.mean(axis=2), (q, keys, values, ids, out, lse)


def _fused_backward(slots, count, heads, rate, interpret, saved, grad):
  q, keys, values, ids, out, lse = saved
  _, backward = _calls(q.shape, count, slots, heads, rate, interpret)
  grad = jnp.broadcast_to((grad / count)[:, :, None], out.shape)  # the mean over memories
  delta = jnp.sum(grad * out, axis=-1, keepdims=True)
  dq, dk, dv = backward(ids, q, keys, values, lse, grad, delta)
  return (dq.sum(axis=2).astype(q.dtype), dk.astype(keys.dtype), dv.astype(values.dtype),
          None)


_fused.defvjp(_fused_forward, _fused_backward)
