"""Slot read: the retrieval of v1's persistent memory, a softmax over learned key/value slots.

    r_t = (1/P) sum_p sum_j softmax_j(q_t . K[p, h, j]) V[p, h, j]

per head h, over N slots in each of P memories. It is attention without a mask whose keys and
values are parameters shared by the whole batch. What matters for training is what autodiff
keeps: the plain form saves the (B, T, H, P, N) slot probabilities, N = 2688 per head for
GPT2-small, i.e. 42 numbers per model-width unit per token per layer, most of v1's activation
memory (docs/scaling.md).

Implementations (``implementation=``):
  * ``"reference"``: einsum, float32 softmax, inverted dropout, einsum (the official code's
    order). Saves the probabilities for the backward pass.
  * ``"recompute"``: the reference with a custom VJP saving nothing but its inputs; the
    backward pass recomputes the scores, the softmax and the dropout mask (from the same key,
    so the result is the reference's). One more (T x N) matmul per head: 7 instead of 6.
    Supports dropout; the default off GPU.
  * ``"blockwise"``: the reference in blocks of 128 tokens with a custom VJP that recomputes
    each block: one block's probabilities alive at a time, O(T) memory. Supports dropout (the
    key folded per block).
  * ``"pallas"``: one Pallas kernel per pass (``kernels/pallas_slots.py``) that keeps the
    probabilities in the TPU's VMEM, dropout applied in the kernel; interpret mode off TPU.
  * ``"xla"`` / ``"cudnn"``: ``jax.nn.dot_product_attention`` with the slots as a key/value
    sequence broadcast over the batch, the P memories as extra heads. cuDNN runs it as flash
    attention (bf16/fp16, head size <= 128), which keeps O(T) softmax statistics. No dropout.
  * ``None``: cuDNN on a GPU where it applies (no dropout), ``blockwise`` on a CPU, ``pallas``
    on a TPU (babistories_v1 on v5p-32, compiled at 1 and 2 blocks: 25.6 GB accessed per
    block and device against about 46 GB recomputing; docs/scaling.md), else ``recompute``.
    On a CPU, XLA keeps about 3.5 probability-sized buffers per layer live even
    for ``recompute`` (compiled temporaries at GPT2-small 1 x 512: 3.03 GiB for both, 0.82 GiB
    blockwise), and blockwise runs within 6% of its time (docs/benchmarks.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mosaics_jax.kernels import retrieval, target

IMPLEMENTATIONS = ("reference", "recompute", "blockwise", "pallas", "xla", "cudnn")


def read_slots_reference(queries: jax.Array, slot_keys: jax.Array, slot_values: jax.Array,
                         dropout_rng: jax.Array | None = None,
                         dropout_rate: float = 0.0) -> jax.Array:
  """Matmuls in the queries' dtype with float32 accumulation; softmax in float32."""
  dtype = queries.dtype
  scores = jnp.einsum("bthd,phnd->bthpn", queries, slot_keys.astype(dtype),
                      preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(scores, axis=-1)
  if dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bthpn,phnd->bthd", probs.astype(dtype), slot_values.astype(dtype),
                   preferred_element_type=jnp.float32)
  return out / slot_keys.shape[0]


def read_slots_recompute(queries, slot_keys, slot_values, dropout_rng=None,
                         dropout_rate: float = 0.0) -> jax.Array:
  """The reference, rematerialised in its backward pass instead of saving probabilities.

  Two optimization barriers in the backward pass. One joins the saved inputs to the incoming
  gradient: the recomputation then waits for the backward pass to reach its layer (and is
  not merged with the forward pass). ``jax.checkpoint`` does not tie it to the gradient, and
  the TPU scheduler hoisted every layer's recomputation to the start of the backward pass,
  each layer's (B, T, H, N) scores then alive until its gradient was done (docs/scaling.md:
  v1 on v5e). The other hands the three gradients back together, so that the slots' are not
  deferred either."""
  read = functools.partial(read_slots_reference, dropout_rate=dropout_rate)

  @jax.custom_vjp
  def recomputed(q, keys, values, rng):
    return read(q, keys, values, rng)

  def forward(q, keys, values, rng):
    return read(q, keys, values, rng), (q, keys, values, rng)

  def backward(saved, grad):
    (q, keys, values, rng), grad = jax.lax.optimization_barrier((saved, grad))
    _, pullback = jax.vjp(lambda *x: read(*x, rng), q, keys, values)
    return (*jax.lax.optimization_barrier(pullback(grad)), None)

  recomputed.defvjp(forward, backward)
  return recomputed(queries, slot_keys, slot_values, dropout_rng)


CHUNK = 128  # tokens per block of the blockwise read


def _chunk_read(q_chunk, keys, values, rng, index, dropout_rate):
  """The reference on one block of tokens, its dropout key folded with the block's index."""
  chunk_rng = None if rng is None else jax.random.fold_in(rng, index)
  return read_slots_reference(q_chunk, keys, values, chunk_rng, dropout_rate)


def _as_chunks(x, chunk):
  """(B, T, H, D) -> (T / chunk, B, chunk, H, D), T padded with zeros to a whole chunk."""
  batch, length = x.shape[:2]
  count = -(-length // chunk)
  x = jnp.pad(x, ((0, 0), (0, count * chunk - length), (0, 0), (0, 0)))
  return jnp.moveaxis(x.reshape(batch, count, chunk, *x.shape[2:]), 1, 0)


def _from_chunks(x, length):
  batch = x.shape[1]
  return jnp.moveaxis(x, 0, 1).reshape(batch, -1, *x.shape[3:])[:, :length]


def read_slots_blockwise(queries, slot_keys, slot_values, dropout_rng=None,
                         dropout_rate: float = 0.0, chunk: int = CHUNK) -> jax.Array:
  """The reference in blocks of ``chunk`` tokens, forward and backward, so that only one
  block's (chunk, H, P, N) probabilities exist at a time: O(T) memory, and blocks small enough
  to stay in a CPU's caches. A custom VJP recomputes each block; the slots' gradients are
  summed over blocks. Dropout: the reference's inverted dropout with the key folded per block
  (the same distribution, another draw than the reference's)."""
  length = queries.shape[1]
  chunk = min(chunk, length)
  read = functools.partial(_chunk_read, dropout_rate=dropout_rate)
  # Made inside each function, not closed over: a traced constant in a custom VJP's closure
  # escapes an enclosing remat.
  indices = lambda: jnp.arange(-(-length // chunk))

  @jax.custom_vjp
  def blocks(q, keys, values, rng):
    out = jax.lax.map(lambda x: read(x[0], keys, values, rng, x[1]), (_as_chunks(q, chunk),
                                                                      indices()))
    return _from_chunks(out, length)

  def forward(q, keys, values, rng):
    return blocks(q, keys, values, rng), (q, keys, values, rng)

  def backward(saved, grad):
    q, keys, values, rng = saved

    def block(carry, x):
      q_chunk, grad_chunk, index = x
      _, pullback = jax.vjp(lambda q, k, v: read(q, k, v, rng, index), q_chunk, keys, values)
      dq, dk, dv = pullback(grad_chunk)
      return (carry[0] + dk, carry[1] + dv), dq

    zeros = (jnp.zeros(keys.shape, jnp.float32), jnp.zeros(values.shape, jnp.float32))
    (dk, dv), dq = jax.lax.scan(block, zeros, (_as_chunks(q, chunk),
                                               _as_chunks(grad.astype(jnp.float32), chunk),
                                               indices()))
    return (_from_chunks(dq, length).astype(q.dtype), dk.astype(keys.dtype),
            dv.astype(values.dtype), None)

  blocks.defvjp(forward, backward)
  return blocks(queries, slot_keys, slot_values, dropout_rng)


def read_slots_fused(queries, slot_keys, slot_values, implementation: str = "xla") -> jax.Array:
  """``jax.nn.dot_product_attention`` over the slots; head p * H + h reads memory p, head h."""
  batch, length, heads, head_dim = queries.shape
  count, _, num_slots, _ = slot_keys.shape
  dtype = queries.dtype

  def as_sequence(slots):  # (P, H, N, D) -> (B, N, P * H, D)
    slots = slots.astype(dtype).reshape(count * heads, num_slots, head_dim).swapaxes(0, 1)
    return jnp.broadcast_to(slots[None], (batch,) + slots.shape)

  out = jax.nn.dot_product_attention(
      jnp.tile(queries, (1, 1, count, 1)), as_sequence(slot_keys), as_sequence(slot_values),
      scale=1.0, implementation=implementation)
  return out.astype(jnp.float32).reshape(batch, length, count, heads, head_dim).mean(axis=2)


def resolve_implementation(implementation: str | None, dtype, head_dim: int,
                           dropout_active: bool) -> str:
  """The explicit choice (checked), or the best one the target platform supports."""
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown slot-read implementation {implementation!r}; choose one of "
                     f"{IMPLEMENTATIONS} or None (automatic).")
  if dropout_active and implementation in ("xla", "cudnn"):
    raise ValueError(
        f"Dropout on the persistent-memory probabilities runs in 'reference', 'recompute', "
        f"'blockwise' or 'pallas', not {implementation!r}: set persistent_dropout=0 or choose "
        "one of those.")
  if implementation is not None:
    return implementation
  if not dropout_active and retrieval.cudnn_supports(dtype, head_dim):
    return "cudnn"
  platform = target.platform()
  if platform == "cpu":  # a quarter of the memory at about the same speed (above)
    return "blockwise"
  if platform == "tpu":  # probabilities kept in VMEM: 46% fewer HBM bytes a block
    return "pallas"
  return "recompute"


def read_slots(queries: jax.Array, slot_keys: jax.Array, slot_values: jax.Array, *,
               dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
               implementation: str | None = None) -> jax.Array:
  """Read the persistent memory.

  Args:
    queries: (B, T, H, D), bandwidth folded in; the matmuls run in their dtype.
    slot_keys, slot_values: (P, H, N, D) learned slots.
    dropout_rate, dropout_rng: inverted dropout on the slot probabilities (training).
    implementation: see the module docstring.

  Returns:
    (B, T, H, D) float32, the mean over the P memories.
  """
  if (queries.ndim != 4 or slot_keys.ndim != 4 or slot_keys.shape != slot_values.shape or
      slot_keys.shape[1] != queries.shape[2] or slot_keys.shape[3] != queries.shape[3]):
    raise ValueError(f"read_slots expects (B, T, H, D) queries and (P, H, N, D) slots; got "
                     f"{queries.shape}, {slot_keys.shape}, {slot_values.shape}.")
  if dropout_rate > 0.0 and dropout_rng is None:
    raise ValueError("slot dropout_rate > 0 needs a dropout_rng.")
  impl = resolve_implementation(implementation, queries.dtype, queries.shape[-1],
                                dropout_active=dropout_rate > 0.0)
  target.record("slot read", impl, f"{slot_keys.shape[0]} x {slot_keys.shape[2]} slots per head")
  if impl in ("xla", "cudnn"):
    return read_slots_fused(queries, slot_keys, slot_values, impl)
  if impl == "pallas":
    # Imported here: kernels/pallas_slots.py needs Pallas's TPU module.
    from mosaics_jax.kernels import pallas_slots  # pylint: disable=import-outside-toplevel
    compute = target.splash_dtype(queries.dtype) or queries.dtype  # f32 where Mosaic needs it
    return pallas_slots.read_slots(queries.astype(compute), slot_keys, slot_values,
                                   dropout_rng, dropout_rate)
  read = {"reference": read_slots_reference, "recompute": read_slots_recompute,
          "blockwise": read_slots_blockwise}[impl]
  return read(queries, slot_keys, slot_values, dropout_rng, dropout_rate)
