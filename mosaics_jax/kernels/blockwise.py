"""Blockwise retrieval in plain JAX: O(T) memory on every backend, no T x T value anywhere.

Where neither splash (TPU) nor cuDNN (recent GPUs, bf16) reads a memory (the CPU, float32 on a
GPU, head sizes over 128, lengths that are not multiples of 128), ``jax.nn.dot_product_attention``
materialises (B, H, T, T) scores and probabilities for the backward pass. This path does what
flash attention does, in ``lax`` loops XLA compiles anywhere:

* forward: for each block of queries, an online softmax over the key blocks it may read (a
  running maximum, sum and weighted sum per row), keeping only the output and each row's
  log-sum-exp;
* backward (a custom VJP): the same loops again, recomputing each block's probabilities from
  the saved log-sum-exp, accumulating dq per query block and dk, dv per key block.

Only the key blocks a query block can see are visited: up to the last pair t - skip, and from
the first pair of a window on, so a short-term window of h costs O(T h), not O(T^2). The mask is
``retrieval.visibility_mask``, built per block from positions, so ``skip`` may be traced (v2's
drawn m) and no shift trick is needed. Segment ids and an additive bias (ALiBi) are read per
block; the bias is a constant (no gradient flows to it: the models' biases are fixed slopes).
Queries arrive with the bandwidth folded in (``retrieval.scaled_queries``), so the gradient of
a per-query bandwidth flows through that product, outside this kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mosaics_jax.kernels import retrieval

BLOCK = 128  # rows and columns of a score block: 64 KiB of float32 per (batch, head)


def _einsum(spec, a, b):
  return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)


class _Blocks:
  """Block geometry and masks of one call: (B, H, T, D) inputs padded to ``count`` blocks."""

  def __init__(self, length: int, block: int, skip, window: int | None, segments, bias):
    self.length, self.block, self.skip, self.window = length, block, skip, window
    self.count = -(-length // block)
    self.padded = self.count * block
    self.segments = None if segments is None else _pad(segments, self.padded, 1, -1)
    if bias is not None:  # (B|1, H|1, T|1, T): pad the axes that are the length
      for axis in (2, 3):
        bias = _pad(bias, self.padded, axis) if bias.shape[axis] > 1 else bias
    self.bias = bias

  def key_range(self, i):
    """First and last key block that query block ``i`` may read (last < first: none)."""
    last = (i * self.block + self.block - 1 - self.skip) // self.block
    last = jnp.clip(last, -1, self.count - 1)
    if self.window is None:
      return jnp.int32(0), last.astype(jnp.int32)
    first = jnp.maximum((i * self.block - self.window + 1) // self.block, 0)
    return first.astype(jnp.int32), last.astype(jnp.int32)

  def scores(self, q_block, keys, i, j):
    """Masked float32 scores (B, H, block, block) of query block i against key block j."""
    k_block = jax.lax.dynamic_slice_in_dim(keys, j * self.block, self.block, axis=2)
    scores = _einsum("bhqd,bhkd->bhqk", q_block, k_block)
    t = i * self.block + jnp.arange(self.block)
    s = j * self.block + jnp.arange(self.block)
    rows = cols = None
    if self.segments is not None:
      rows = jax.lax.dynamic_slice_in_dim(self.segments, i * self.block, self.block, axis=1)
      cols = jax.lax.dynamic_slice_in_dim(self.segments, j * self.block, self.block, axis=1)
    # Padding keys get position -1, which the mask reads as an empty slot.
    mask = retrieval.visibility_mask(t, jnp.where(s < self.length, s, -1), self.skip,
                                     self.window, rows, cols)
    if self.bias is not None:
      bias = self.bias
      if bias.shape[2] > 1:
        bias = jax.lax.dynamic_slice_in_dim(bias, i * self.block, self.block, axis=2)
      scores = scores + jax.lax.dynamic_slice_in_dim(bias, j * self.block, self.block,
                                                     axis=3).astype(jnp.float32)
    return jnp.where(mask, scores, -jnp.inf)


def _pad(x, length: int, axis: int, value=0):
  extra = length - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


def _forward(q, k, v, skip, segments, bias, window, block):
  """(output (B, H, Tp, D) float32, log-sum-exp (B, H, Tp): +inf where a row reads nothing)."""
  geometry = _Blocks(q.shape[2], block, skip, window, segments, bias)
  length = geometry.padded
  q, k, v = (_pad(x, length, 2) for x in (q, k, v))

  def query_block(i):
    q_block = jax.lax.dynamic_slice_in_dim(q, i * block, block, axis=2)
    first, last = geometry.key_range(i)
    shape = q_block.shape[:3]

    def step(carry):
      j, peak, total, acc = carry
      scores = geometry.scores(q_block, k, i, j)
      new_peak = jnp.maximum(peak, scores.max(-1))
      safe = jnp.where(jnp.isfinite(new_peak), new_peak, 0.0)
      probabilities = jnp.exp(scores - safe[..., None])
      correction = jnp.exp(peak - safe)
      v_block = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)
      acc = acc * correction[..., None] + _einsum("bhqk,bhkd->bhqd", probabilities, v_block)
      return j + 1, new_peak, total * correction + probabilities.sum(-1), acc

    init = (first, jnp.full(shape, -jnp.inf), jnp.zeros(shape),
            jnp.zeros(q_block.shape, jnp.float32))
    _, peak, total, acc = jax.lax.while_loop(lambda c: c[0] <= last, step, init)
    seen = total > 0
    out = jnp.where(seen[..., None], acc / jnp.where(seen, total, 1.0)[..., None], 0.0)
    return out, jnp.where(seen, peak + jnp.log(jnp.where(seen, total, 1.0)), jnp.inf)

  out, lse = jax.lax.map(query_block, jnp.arange(geometry.count))
  # (blocks, B, H, block, ...) -> (B, H, Tp, ...)
  out = jnp.moveaxis(out, 0, 2).reshape(q.shape[:2] + (length, q.shape[3]))
  lse = jnp.moveaxis(lse, 0, 2).reshape(q.shape[:2] + (length,))
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _attend(q, k, v, skip, segments, bias, window, block):
  out, _ = _forward(q, k, v, skip, segments, bias, window, block)
  return out[:, :, :q.shape[2]].astype(v.dtype)


def _attend_forward(q, k, v, skip, segments, bias, window, block):
  out, lse = _forward(q, k, v, skip, segments, bias, window, block)
  return out[:, :, :q.shape[2]].astype(v.dtype), (q, k, v, skip, segments, bias, out, lse)


def _attend_backward(window, block, residuals, d_out):
  q_in, k_in, v_in, skip, segments, bias, out, lse = residuals
  geometry = _Blocks(q_in.shape[2], block, skip, window, segments, bias)
  length = geometry.padded
  q, k, v = (_pad(x, length, 2) for x in (q_in, k_in, v_in))
  d_out = _pad(d_out.astype(jnp.float32), length, 2)
  delta = jnp.sum(d_out * out, axis=-1)  # (B, H, Tp): the softmax's row term

  def query_block(i, carry):
    dq, dk, dv = carry
    q_block = jax.lax.dynamic_slice_in_dim(q, i * block, block, axis=2)
    do_block = jax.lax.dynamic_slice_in_dim(d_out, i * block, block, axis=2)
    lse_block = jax.lax.dynamic_slice_in_dim(lse, i * block, block, axis=2)
    delta_block = jax.lax.dynamic_slice_in_dim(delta, i * block, block, axis=2)
    first, last = geometry.key_range(i)

    def step(inner):
      j, dq_block, dk, dv = inner
      scores = geometry.scores(q_block, k, i, j)
      probabilities = jnp.exp(scores - lse_block[..., None])
      k_block = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=2)
      v_block = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)
      d_scores = probabilities * (_einsum("bhqd,bhkd->bhqk", do_block, v_block)
                                  - delta_block[..., None])
      dq_block = dq_block + _einsum("bhqk,bhkd->bhqd", d_scores, k_block)
      add = lambda total, part: jax.lax.dynamic_update_slice_in_dim(
          total, jax.lax.dynamic_slice_in_dim(total, j * block, block, axis=2) + part,
          j * block, axis=2)
      dk = add(dk, _einsum("bhqk,bhqd->bhkd", d_scores, q_block))
      dv = add(dv, _einsum("bhqk,bhqd->bhkd", probabilities, do_block))
      return j + 1, dq_block, dk, dv

    _, dq_block, dk, dv = jax.lax.while_loop(
        lambda c: c[0] <= last, step, (first, jnp.zeros(q_block.shape, jnp.float32), dk, dv))
    return jax.lax.dynamic_update_slice_in_dim(dq, dq_block, i * block, axis=2), dk, dv

  zeros = jnp.zeros(q.shape, jnp.float32)
  dq, dk, dv = jax.lax.fori_loop(0, geometry.count, query_block, (zeros, zeros, zeros))
  cut = lambda grad, like: grad[:, :, :like.shape[2]].astype(like.dtype)
  return cut(dq, q_in), cut(dk, k_in), cut(dv, v_in), None, None, None


_attend.defvjp(_attend_forward, _attend_backward)


def attend(queries, keys, values, *, skip=1, window: int | None = None, segment_ids=None,
           bias=None, block: int = BLOCK):
  """Read (B, T, H, D) keys and values with (B, T, H, D) queries (bandwidth folded in): the
  reference's weights (``retrieval.retrieval_weights``) without storing them. Returns
  (B, T, H, D) in the values' dtype; zero where a query reads no pair."""
  length = queries.shape[1]
  block = min(block, -(-length // 8) * 8)
  to_heads = lambda x: jnp.swapaxes(x, 1, 2)
  if bias is not None:
    bias = jax.lax.stop_gradient(jnp.asarray(bias))
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
  skip = jnp.asarray(skip, jnp.int32)
  out = _attend(to_heads(queries), to_heads(keys), to_heads(values), skip, segment_ids, bias,
                window, block)
  return to_heads(out)
