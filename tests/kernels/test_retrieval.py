"""The retrieval op: fused paths equal the reference for every mask kind, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax.kernels import retrieval, segments

B, T, H, D = 2, 24, 3, 8
SEGMENTS = np.array([[1] * 7 + [2] * 11 + [3] * 6, [5] * 20 + [0] * 4])  # row 2: padding id 0

MASK_KINDS = {
    "strict_causal": dict(skip=1),
    "causal_with_diagonal": dict(skip=0),
    "short_term_window": dict(skip=1, window=5),
    "sliding_window_attention": dict(skip=0, window=4),
    "long_term_skip": dict(skip=6),
    "skip_beyond_length": dict(skip=T + 3),
    "window_not_above_skip": dict(skip=3, window=3),
    "bandwidth_per_query": dict(skip=1, query_scale=True),
    "alibi_bias": dict(skip=0, bias=True),
    "documents": dict(skip=1, segments=True),
    "documents_window": dict(skip=1, window=5, segments=True),
    "documents_long_term": dict(skip=4, segments=True, query_scale=True),
}


def _inputs(seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 5)
  q, k, v = (jax.random.normal(key, (B, T, H, D), dtype) for key in keys[:3])
  scale = jax.random.uniform(keys[3], (B, T, H), minval=0.5, maxval=3.0)
  bias = jax.random.normal(keys[4], (1, H, T, T))
  return q, k, v, scale, bias


def _kwargs(kind, scale, bias):
  spec = dict(MASK_KINDS[kind])
  kwargs = dict(skip=spec["skip"], window=spec.get("window"))
  if spec.get("query_scale"):
    kwargs["query_scale"] = scale
  if spec.get("bias"):
    kwargs["bias"] = bias
  if spec.get("segments"):
    kwargs["segment_ids"] = jnp.asarray(SEGMENTS)
  return kwargs


@pytest.mark.parametrize("kind", sorted(MASK_KINDS))
def test_fused_matches_reference_values_and_gradients(kind):
  q, k, v, scale, bias = _inputs()
  kwargs = _kwargs(kind, scale, bias)

  def run(implementation):
    def loss(q, k, v, scale):
      kw = dict(kwargs)
      if "query_scale" in kw:
        kw["query_scale"] = scale
      out = retrieval.retrieve(q, k, v, implementation=implementation, **kw)
      return jnp.sum(out * jnp.cos(jnp.arange(out.size).reshape(out.shape))), out
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, scale)
    return out, grads

  ref_out, ref_grads = run("reference")
  for implementation in ("xla", "blockwise"):
    out, grads = run(implementation)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
      np.testing.assert_allclose(grad, ref_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("segments", [False, True])
def test_traced_skip_changes_every_call_without_recompiling(segments):
  q, k, v, _, _ = _inputs(1)
  seg = jnp.asarray(SEGMENTS) if segments else None
  traces = []

  @jax.jit
  def both(m):
    traces.append(1)
    fused = retrieval.retrieve(q, k, v, skip=m, segment_ids=seg, implementation="xla")
    return fused, retrieval.retrieve(q, k, v, skip=m, segment_ids=seg, implementation="reference")

  for m in [1, 2, 5, 17, T - 1, T, T + 4]:
    fused, ref = both(jnp.int32(m))
    np.testing.assert_allclose(fused, ref, atol=1e-5)
    static = retrieval.retrieve(q, k, v, skip=m, segment_ids=seg, implementation="reference")
    np.testing.assert_allclose(ref, static, atol=1e-6)
  assert len(traces) == 1


def test_reference_is_the_definition():
  """Brute force over pairs with numpy, including empty memories returning 0."""
  q, k, v, scale, _ = _inputs(2)
  seg = SEGMENTS
  out = retrieval.retrieve(q, k, v, skip=2, window=6, segment_ids=jnp.asarray(seg),
                           query_scale=scale, implementation="reference")
  q, k, v, scale = (np.asarray(a, np.float64) for a in (q, k, v, scale))
  expected = np.zeros((B, T, H, D))
  for b in range(B):
    for t in range(T):
      pairs = [s for s in range(T) if s <= t - 2 and t - s < 6 and seg[b, s] == seg[b, t]]
      for h in range(H):
        if pairs:
          scores = np.array([scale[b, t, h] * q[b, t, h] @ k[b, s, h] for s in pairs])
          w = np.exp(scores - scores.max())
          w /= w.sum()
          expected[b, t, h] = sum(wi * v[b, s, h] for wi, s in zip(w, pairs))
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert np.all(np.asarray(out)[:, :2] == 0)  # position 0 and 1 see nothing with skip=2


def test_visible_pairs_counts_the_mask():
  positions = segments.positions_in_segment(jnp.asarray(SEGMENTS), T)
  for skip, window in [(1, None), (1, 5), (4, None), (0, 3)]:
    mask = retrieval.visibility_mask(jnp.arange(T), jnp.arange(T), skip, window,
                                     jnp.asarray(SEGMENTS), jnp.asarray(SEGMENTS))
    np.testing.assert_array_equal(retrieval.visible_pairs(positions, skip, window),
                                  mask.sum(-1)[:, 0])


def test_bf16_fused_close_to_float32_reference():
  q, k, v, _, _ = _inputs(3)
  ref = retrieval.retrieve(q, k, v, skip=1, implementation="reference")
  fused = retrieval.retrieve(*(a.astype(jnp.bfloat16) for a in (q, k, v)), skip=1,
                             implementation="xla")
  assert fused.dtype == jnp.bfloat16
  np.testing.assert_allclose(fused.astype(jnp.float32), ref, atol=0.1)


def test_dropout_on_weights():
  q, k, v, _, _ = _inputs(4)
  rng = jax.random.key(7)
  out = retrieval.retrieve(q, k, v, dropout_rate=0.5, dropout_rng=rng)  # automatic: reference
  clean = retrieval.retrieve(q, k, v, implementation="reference")
  assert not np.allclose(out, clean)
  # Inverted dropout keeps the expectation: average many masks.
  outs = jax.vmap(lambda key: retrieval.retrieve(q, k, v, dropout_rate=0.2, dropout_rng=key))(
      jax.random.split(rng, 2000))
  assert np.abs(np.mean(outs, axis=0) - clean).mean() < 0.01
  with pytest.raises(ValueError, match="reference implementation"):
    retrieval.retrieve(q, k, v, dropout_rate=0.1, dropout_rng=rng, implementation="xla")
  with pytest.raises(ValueError, match="dropout_rng"):
    retrieval.retrieve(q, k, v, dropout_rate=0.1)


def test_automatic_choice_and_bad_arguments():
  assert retrieval.resolve_implementation(None, jnp.float32, 64) == "blockwise"  # on CPU
  assert retrieval.resolve_implementation("cudnn", jnp.bfloat16, 64) == "cudnn"
  q, k, v, _, _ = _inputs()
  with pytest.raises(ValueError, match="Unknown retrieval implementation"):
    retrieval.retrieve(q, k, v, implementation="flash")
  with pytest.raises(ValueError, match="skip must be >= 0"):
    retrieval.retrieve(q, k, v, skip=-1)
  with pytest.raises(ValueError, match=r"\(B, T, H, D\)"):
    retrieval.retrieve(q[0], k[0], v[0])
  with pytest.raises(ValueError, match="traced skip"):
    jax.jit(lambda m: retrieval.retrieve(q, k, v, skip=m, window=4, implementation="xla"))(2)


@pytest.mark.parametrize("window,with_segments,with_bias", [(None, False, False), (5, True, True)])
def test_last_query_weights_are_the_last_row(window, with_segments, with_bias):
  b, t, h, d = 2, 12, 3, 4
  q, k = (jax.random.normal(key, (b, t, h, d)) for key in jax.random.split(jax.random.key(3)))
  segment_ids = jnp.array([[1] * 4 + [2] * 8, [1] * 12]) if with_segments else None
  bias = jax.random.normal(jax.random.key(4), (1, h, t, t)) if with_bias else None
  scale = jax.random.uniform(jax.random.key(5), (b, t, h), minval=0.5, maxval=2.0)
  for skip in (0, 1):
    full = retrieval.retrieval_weights(q, k, skip=skip, window=window, segment_ids=segment_ids,
                                       bias=bias, query_scale=scale)
    last = retrieval.last_query_weights(q, k, skip=skip, window=window, segment_ids=segment_ids,
                                        bias=bias, query_scale=scale)
    np.testing.assert_allclose(last, full[:, :, -1], atol=1e-6)
