"""Kernel-regression retrieval: the read operation of every Memory Mosaics memory.

A contextual associative memory holds key/value pairs (k_s, v_s) and answers a query q_t by
Gaussian kernel regression (Nadaraya-Watson) over the pairs the query may read:

    out_t = sum_s  exp(q_t . k_s) v_s / sum_s' exp(q_t . k_s')        (v1 eq. 4, v2 eq. 4)

Keys are unit vectors, so exp(beta k_t.k_s) is the Gaussian kernel up to a factor that
cancels; the bandwidth beta is folded into the queries (and/or keys) by the caller, so no
1/sqrt(d) is applied here. The same function serves the transformer baselines: they pass
queries already scaled by 1/sqrt(d) and ``skip=0``.

Which pairs query t may read (all conditions together):
  * ``s <= t - skip``: skip=1 is the strict causality of Memory Mosaics (the value of pair t
    peeks at token t+1); skip=0 is ordinary causal attention; skip=m is v2's long-term
    memory, which ignores the m most recent pairs. ``skip`` may be a traced integer.
  * ``t - s < window``: v2's short-term memory (pairs t-h+1 .. t-1 for window=h, skip=1).
  * ``segment_ids[s] == segment_ids[t]``: documents packed in one row, and padding (give
    padding a segment id of its own).
A query that can read no pair returns exactly 0 (v1 sets position 0's output to 0).

Implementations (``implementation=``):
  * ``"reference"``: explicit (B, H, T, T) scores in float32 and a mask built from positions.
    Supports everything, including dropout on the retrieval weights. Memory O(T^2).
  * ``"xla"`` / ``"cudnn"``: ``jax.nn.dot_product_attention``. Strict causality becomes
    ordinary causal attention by the shift trick: query t is moved to row t - skip (a roll
    of the queries, so the shift may be traced and shapes stay static), where the causal
    mask admits exactly the keys s <= t - skip; outputs are rolled back and the rows that
    see no pair are zeroed. A window becomes ``local_window_size=(window - skip - 1, 0)``.
    cuDNN runs it as flash attention on GPU (bf16/fp16); XLA elsewhere.
  * ``"blockwise"``: flash attention's online softmax in plain JAX loops, with a custom VJP
    that recomputes per block (``kernels/blockwise.py``): O(T) memory on any backend, every
    mask kind above (a traced skip included) and an additive bias; no weight dropout.
  * ``"splash"``: Pallas splash attention, the TPU path (``kernels/splash.py``; the same
    shift trick), run per device under a mesh. It reads lengths in multiples of 128 without an
    additive bias; other calls (a model's initialisation on a short input, decoding steps,
    ALiBi) go to XLA. Interpret mode when the target is not a TPU.
  * ``None``: cuDNN on an Ampere-or-newer GPU when the dtype and head size allow it, splash on
    TPU when the length and bias allow it (in float32 on v2/v3), else XLA (the table is in
    ``kernels/target.py``; blockwise on a CPU, where it was measured faster than XLA at
    every length); the reference when weight dropout is active (the
    fused kernels have no dropout). The platform is the target's: the devices of the mesh
    the step is traced under (``kernels/target.py``), not the host's.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from mosaics_jax.kernels import splash, target

Implementation = Literal["reference", "blockwise", "xla", "cudnn", "splash"]
IMPLEMENTATIONS = ("reference", "blockwise", "xla", "cudnn", "splash")


def visible_pairs(positions: jax.Array, skip, window: int | None) -> jax.Array:
  """Number of pairs a query at ``positions`` (index in its segment) can read: v2's n.

  The readable pairs are s in [t - min(pos, window - 1), t - skip], so
  n = max(min(pos, window - 1) - skip + 1, 0).
  """
  reach = positions if window is None else jnp.minimum(positions, window - 1)
  return jnp.maximum(reach - skip + 1, 0)


def visibility_mask(query_positions: jax.Array, key_positions: jax.Array, skip,
                    window: int | None, query_segments: jax.Array | None = None,
                    key_segments: jax.Array | None = None) -> jax.Array:
  """Boolean (B|1, 1, Tq, Tk) mask: True where the query at position t may read the pair at
  position s. A negative key position marks an empty slot (of a decoding cache)."""
  t = query_positions[:, None]
  s = key_positions[None, :]
  mask = (s >= 0) & (s <= t - skip)
  if window is not None:
    mask &= s > t - window
  mask = mask[None, None]
  if query_segments is not None:
    mask = mask & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
  return mask


def scaled_queries(queries: jax.Array, query_scale: jax.Array | None) -> jax.Array:
  if query_scale is None:
    return queries
  scale = jnp.asarray(query_scale)
  return (queries * scale[..., None].astype(jnp.float32)).astype(queries.dtype)


def retrieval_weights(queries: jax.Array, keys: jax.Array, *, skip=1,
                      window: int | None = None, segment_ids: jax.Array | None = None,
                      query_scale: jax.Array | None = None, bias: jax.Array | None = None,
                      query_positions: jax.Array | None = None,
                      key_positions: jax.Array | None = None,
                      key_segment_ids: jax.Array | None = None) -> jax.Array:
  """Reference retrieval weights, float32 (B, H, Tq, Tk); rows that see no pair are all zero.

  Queries and keys sit at positions 0..T-1 unless ``query_positions`` / ``key_positions``
  say otherwise (a decoding cache: keys of earlier steps, empty slots at -1), and keys share
  the queries' ``segment_ids`` unless ``key_segment_ids`` are given. Also the tool for
  attention analyses (average weight of the last query over positions).
  """
  q = scaled_queries(queries, query_scale).astype(jnp.float32)
  scores = jnp.einsum("btnh,bsnh->bnts", q, keys.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)
  if bias is not None:
    scores = scores + bias.astype(jnp.float32)
  if query_positions is None:
    query_positions = jnp.arange(queries.shape[1])
  if key_positions is None:
    key_positions = jnp.arange(keys.shape[1])
  mask = visibility_mask(query_positions, key_positions, skip, window, segment_ids,
                         segment_ids if key_segment_ids is None else key_segment_ids)
  scores = jnp.where(mask, scores, -jnp.inf)
  row_max = jnp.max(scores, axis=-1, keepdims=True)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  unnormalised = jnp.exp(scores - row_max)
  total = jnp.sum(unnormalised, axis=-1, keepdims=True)
  return unnormalised / jnp.where(total > 0, total, 1.0)


def last_query_weights(queries: jax.Array, keys: jax.Array, *, skip=1,
                       window: int | None = None, segment_ids: jax.Array | None = None,
                       query_scale: jax.Array | None = None,
                       bias: jax.Array | None = None) -> jax.Array:
  """Retrieval weights (B, H, T) of the last query over every position: what the attention
  analyses (v1 Figures 14-16) average. ``query_scale`` (..., T, H) and ``bias``
  (1|B, H, T, T) as in ``retrieve``."""
  length = queries.shape[1]
  return retrieval_weights(
      queries[:, -1:], keys, skip=skip, window=window,
      segment_ids=None if segment_ids is None else segment_ids[:, -1:],
      key_segment_ids=segment_ids, bias=None if bias is None else bias[:, :, -1:],
      query_scale=None if query_scale is None else query_scale[..., -1:, :],
      query_positions=jnp.array([length - 1]))[:, :, 0]


def retrieve_reference(queries, keys, values, *, skip=1, window=None, segment_ids=None,
                       query_scale=None, bias=None, dropout_rate: float = 0.0,
                       dropout_rng: jax.Array | None = None, query_positions=None,
                       key_positions=None, key_segment_ids=None) -> jax.Array:
  """Plain einsum implementation; the definition the fused paths are tested against, and the
  read of a decoding cache (explicit positions, see ``retrieval_weights``)."""
  weights = retrieval_weights(queries, keys, skip=skip, window=window,
                              segment_ids=segment_ids, query_scale=query_scale, bias=bias,
                              query_positions=query_positions, key_positions=key_positions,
                              key_segment_ids=key_segment_ids)
  if dropout_rate > 0.0:
    if dropout_rng is None:
      raise ValueError("retrieval dropout_rate > 0 needs a dropout_rng.")
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bnts,bsnh->btnh", weights, values.astype(jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
  return out.astype(values.dtype)


def queries_with_pairs(length: int, skip, window: int | None,
                        segment_ids: jax.Array | None) -> jax.Array:
  """(B|1, T) bool: True where the query can read at least one pair.

  With contiguous segments, query t sees a pair iff pair t - skip exists, lies inside the
  window, and belongs to t's segment.
  """
  t = jnp.arange(length)[None]
  has_pairs = t >= skip
  if window is not None:
    has_pairs &= jnp.asarray(skip) < window
  if segment_ids is not None:
    has_pairs = has_pairs & (jnp.roll(segment_ids, skip, axis=1) == segment_ids)
  return has_pairs


def shifted_reach(skip, window: int | None) -> int | None:
  """For kernels read with the shift trick (queries rolled back by ``skip``): how many pairs
  before t - skip a window lets query t read; None without a window, negative when the window
  holds no pair. A window needs a Python int skip (the kernels' masks are static)."""
  if window is None:
    return None
  if not isinstance(skip, (int, np.integer)):
    raise ValueError("A window with a traced skip has no fused form; pass a Python int skip "
                     "or implementation='reference'.")
  return window - skip - 1


def read_shifted(attend, queries, keys, values, *, skip, window, segment_ids, query_scale):
  """The shift trick of the module docstring around a causal-attention kernel
  ``attend(q, k, v, reach, query_segments) -> (B, T, H, D)``: query t moved to row t - skip
  (``reach``: pairs before t - skip a window admits, None for all), outputs rolled back and
  zeroed where a query reads no pair."""
  reach = shifted_reach(skip, window)
  if reach is not None and reach < 0:
    return jnp.zeros_like(values)
  q = jnp.roll(scaled_queries(queries, query_scale), -skip, axis=1)
  query_segments = None if segment_ids is None else jnp.roll(segment_ids, -skip, axis=1)
  out = jnp.roll(attend(q, keys, values, reach, query_segments), skip, axis=1)
  has_pairs = queries_with_pairs(out.shape[1], skip, window, segment_ids)
  return jnp.where(has_pairs[:, :, None, None], out, jnp.zeros((), out.dtype)).astype(
      values.dtype)


def retrieve_fused(queries, keys, values, *, skip=1, window=None, segment_ids=None,
                   query_scale=None, bias=None,
                   implementation: Literal["xla", "cudnn"] = "xla") -> jax.Array:
  """``jax.nn.dot_product_attention`` with the shift trick (see the module docstring)."""
  if bias is not None and bias.shape[-2] != 1:
    bias = jnp.roll(bias, -skip, axis=-2)

  def attend(q, k, v, reach, query_segments):
    mask = None
    if segment_ids is not None:
      mask = query_segments[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=1.0, is_causal=True,
        local_window_size=None if reach is None else (reach, 0), implementation=implementation)

  return read_shifted(attend, queries, keys, values, skip=skip, window=window,
                      segment_ids=segment_ids, query_scale=query_scale)


def retrieve_splash(queries, keys, values, *, skip=1, window=None, segment_ids=None,
                    query_scale=None, interpret: bool | None = None) -> jax.Array:
  """Pallas splash attention with the shift trick (``kernels/splash.py``), on each device's
  shard under a mesh; ``interpret`` defaults to "the target is not a TPU"."""
  if not splash.supports(queries.shape[1], has_bias=False):
    raise ValueError(f"The splash path needs a length that is a multiple of {splash.BLOCK}, "
                     f"got {queries.shape[1]}; use implementation='xla' (or None: automatic).")
  interpret = target.platform() != "tpu" if interpret is None else interpret
  # TPU v2/v3 compile splash in float32 only (kernels/target.py); elsewhere the query dtype.
  compute = target.splash_dtype(queries.dtype)
  compute = queries.dtype if compute is None else compute

  def attend(q, k, v, reach, query_segments):
    out = splash.causal_attention(q.astype(compute), k.astype(compute), v.astype(compute),
                                  reach=reach, query_segments=query_segments,
                                  key_segments=segment_ids, interpret=interpret)
    return out.astype(q.dtype)

  return read_shifted(attend, queries, keys, values, skip=skip, window=window,
                      segment_ids=segment_ids, query_scale=query_scale)


def cudnn_supports(dtype, head_dim: int) -> bool:
  """Whether ``jax.nn.dot_product_attention`` can run cuDNN for the target: a GPU of compute
  capability 8.0+ (``target.cudnn_flash``), bf16/fp16 inputs and a head size that is a
  multiple of 8, at most 128."""
  return (jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
          and head_dim <= 128 and target.cudnn_flash())


def resolve_implementation(implementation: str | None, dtype, head_dim: int,
                           dropout_active: bool = False, length: int | None = None,
                           has_bias: bool = False) -> Implementation:
  """The implementation that runs: the explicit choice (splash falls back to XLA where it
  cannot read the call), or the best one the target platform supports."""
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown retrieval implementation {implementation!r}; "
                     f"choose one of {IMPLEMENTATIONS} or None (automatic).")
  if dropout_active:
    if implementation not in (None, "reference"):
      raise ValueError(
          f"Dropout on retrieval weights runs only in the reference implementation, not "
          f"{implementation!r}: set the weight dropout to 0 or implementation='reference'.")
    return "reference"
  splash_reads = length is not None and splash.supports(length, has_bias)
  if implementation == "splash":
    return "splash" if splash_reads else "xla"
  if implementation is not None:
    return implementation
  if cudnn_supports(dtype, head_dim):
    return "cudnn"
  if target.splash_dtype(dtype) is not None and splash_reads:
    return "splash"
  if target.platform() == "cpu":  # measured 2.2-14x faster than XLA there (docs/benchmarks.md)
    return "blockwise"
  return "xla"


def retrieve(queries: jax.Array, keys: jax.Array, values: jax.Array, *, skip=1,
             window: int | None = None, segment_ids: jax.Array | None = None,
             query_scale: jax.Array | None = None, bias: jax.Array | None = None,
             dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
             implementation: str | None = None) -> jax.Array:
  """Read a contextual memory.

  Args:
    queries: (B, T, H, D) queries, bandwidth already folded in (or see ``query_scale``).
    keys: (B, T, H, D) stored keys; pair s is (keys[:, s], values[:, s]).
    values: (B, T, H, D) stored values.
    skip: query t reads pairs s <= t - skip. Python int, or a traced int32 scalar.
    window: if set, only pairs with t - s < window.
    segment_ids: (B, T) ints; pairs are read only inside a segment.
    query_scale: (B|1, T, H) per-query factor (v2's adaptive bandwidth beta(n_t)).
    bias: additive scores, broadcastable to (B, H, T, T), in (query, key) positions (ALiBi).
    dropout_rate, dropout_rng: inverted dropout on the weights (reference only).
    implementation: "reference", "xla", "cudnn", "splash" or None (automatic, see the module
      docstring).

  Returns:
    (B, T, H, D) in the dtype of ``values``; zero where a query reads no pair.
  """
  if queries.ndim != 4 or keys.shape != values.shape or queries.shape[:2] != keys.shape[:2]:
    raise ValueError(f"retrieve expects (B, T, H, D) queries, keys and values of one length; "
                     f"got {queries.shape}, {keys.shape}, {values.shape}.")
  if isinstance(skip, (int, np.integer)) and skip < 0:
    raise ValueError(f"skip must be >= 0, got {skip}.")
  if window is not None and window < 1:
    raise ValueError(f"window must be >= 1 or None, got {window}.")
  impl = resolve_implementation(implementation, queries.dtype, queries.shape[-1],
                                dropout_active=dropout_rate > 0.0, length=queries.shape[1],
                                has_bias=bias is not None)
  detail = _describe(skip, window, queries.shape[1])
  if impl == "splash" and target.splash_dtype(queries.dtype) not in (None, queries.dtype):
    detail += f", in {target.splash_dtype(queries.dtype).name} on {target.chip().name}"
  target.record("retrieval", impl, detail)
  kwargs = dict(skip=skip, window=window, segment_ids=segment_ids, query_scale=query_scale)
  if impl == "reference":
    return retrieve_reference(queries, keys, values, bias=bias, dropout_rate=dropout_rate,
                              dropout_rng=dropout_rng, **kwargs)
  if impl == "splash":
    return retrieve_splash(queries, keys, values, **kwargs)
  if impl == "blockwise":
    # Imported here: kernels/blockwise.py builds its masks with this module's visibility_mask.
    from mosaics_jax.kernels import blockwise  # pylint: disable=import-outside-toplevel
    return blockwise.attend(scaled_queries(queries, query_scale), keys, values, skip=skip,
                            window=window, segment_ids=segment_ids, bias=bias)
  return retrieve_fused(queries, keys, values, bias=bias, implementation=impl, **kwargs)


def _describe(skip, window: int | None, length: int) -> str:
  """What a read is, for the kernel report: 'T 4096, skip m (traced), window 256'."""
  skip = f"skip {skip}" if isinstance(skip, (int, np.integer)) else "skip m (traced)"
  return f"T {length}, {skip}" + ("" if window is None else f", window {window}")
