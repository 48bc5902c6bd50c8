"""Memory units and baseline attention: causality, empty memories, scales, bandwidth."""

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from mosaics_jax.kernels import retrieval
from mosaics_jax.layers import common
from mosaics_jax.layers.attention import Attention, LongShortAttention, alibi_slopes, rope
from mosaics_jax.layers.contextual import (AdaptiveBandwidth, ContextualMemory, GatedMemory,
                                           LongShortMemory, v1_key_scale)
from mosaics_jax.layers.persistent import FeedForward, PersistentMemory

B, T, C, H = 2, 16, 32, 4
X = jax.random.normal(jax.random.key(0), (B, T, C))
POSITIONS = jnp.arange(T)[None]
INIT = dict(proj_init=common.normal(C ** -0.5), out_init=common.normal(0.1))


def _apply(module, *args, **kwargs):
  """Init and apply under jit (one compile instead of one per op); args stay static."""
  variables = jax.jit(lambda key: module.init(key, *args, **kwargs))(jax.random.key(1))
  params = nn.unbox(variables["params"])
  return params, jax.jit(lambda p: module.apply({"params": p}, *args, **kwargs))(params)


def test_v1_contextual_memory_is_strictly_causal_and_empty_at_position_zero():
  module = ContextualMemory(H, **INIT)
  params, out = _apply(module, X)
  _, inter = module.apply({"params": params}, X, mutable=["intermediates"])
  np.testing.assert_array_equal(inter["intermediates"]["heads_out"][0][:, 0], 0.0)
  changed = module.apply({"params": params}, X.at[:, 9].set(1.0))
  # Output t depends on x_0..x_t (the value of pair t-1 holds x_t), never on x_{t+1}.
  np.testing.assert_allclose(changed[:, :9], out[:, :9], atol=1e-6)
  assert not np.allclose(changed[:, 9], out[:, 9])


def test_v1_key_scale_library_and_nano_clamps():
  p = jnp.asarray([0.1, 0.3, 0.6, 2.0])
  np.testing.assert_allclose(v1_key_scale(p, power=1, variant="library"), np.exp([1, 3, 5, 5]),
                             rtol=1e-6)
  np.testing.assert_allclose(v1_key_scale(p, power=2, variant="library"), np.exp([2, 6, 10, 10]),
                             rtol=1e-6)
  np.testing.assert_allclose(v1_key_scale(p, power=2, variant="nano"),
                             [np.exp(2), np.exp(6), 65535, 65535], rtol=1e-5)
  with pytest.raises(ValueError, match="variant"):
    v1_key_scale(p, power=1, variant="eft")


def test_v1_persistent_memory_slots_and_count():
  module = PersistentMemory(H, num_slots=10, count=3, **INIT)
  params, out = _apply(module, X)
  assert params["slot_keys"].shape == (3, H, 10, C // H)
  assert out.shape == X.shape
  # Position-wise except through the leaky key: changing x_9 leaves outputs before 9 alone.
  changed = module.apply({"params": params}, X.at[:, 9].set(1.0))
  np.testing.assert_allclose(changed[:, :9], out[:, :9], atol=1e-6)


def test_adaptive_bandwidth_init_matches_the_paper():
  module = AdaptiveBandwidth(H)
  n = jnp.asarray([[0, 1, 255, 4096]])
  params, beta = _apply(module, n)
  expected = np.exp(1.5) * np.maximum(np.asarray([0, 1, 255, 4096]), 1) ** (1 / 3) + np.exp(1.5)
  np.testing.assert_allclose(beta[0, :, 0], expected, rtol=1e-5)
  assert abs(float(beta[0, 2, 0]) - 33.0) < 0.5 and abs(float(beta[0, 3, 0]) - 76.0) < 1.0


def test_short_term_memory_reads_only_its_window():
  window = 4
  module = GatedMemory(H, window=window, **INIT)
  params, out = _apply(module, X, POSITIONS, None, 1)
  _, inter = module.apply({"params": params}, X, POSITIONS, None, 1, capture_intermediates=True,
                          mutable=["intermediates"])
  n = retrieval.visible_pairs(POSITIONS, 1, window)
  np.testing.assert_array_equal(n[0], np.minimum(np.arange(T), window - 1))
  beta = inter["intermediates"]["bandwidth"]["__call__"][0]
  np.testing.assert_allclose(beta[0, 5, 0], np.exp(1.5) * 3 ** (1 / 3) + np.exp(1.5), rtol=1e-5)
  assert np.all(np.asarray(out[:, 0]) == 0)


def test_long_term_memory_skips_recent_pairs_and_can_be_traced():
  module = GatedMemory(H, window=None, **INIT)
  params, out = _apply(module, X, POSITIONS, None, 5)
  assert np.all(np.asarray(out[:, :5]) == 0) and np.any(np.asarray(out[:, 5]) != 0)
  traced = jax.jit(lambda m: module.apply({"params": params}, X, POSITIONS, None, m))(5)
  np.testing.assert_allclose(traced, out, atol=1e-6)


def test_long_short_memory_levels():
  kwargs = dict(num_heads=H, short_term_window=4, **INIT)
  params, both = _apply(LongShortMemory(**kwargs), X, POSITIONS, None, 3)
  assert set(params) == {"short_term", "long_term"}
  short_only = LongShortMemory(long_term=False, **kwargs)
  out = short_only.apply({"params": {"short_term": params["short_term"]}}, X, POSITIONS, None, 3)
  long_part = GatedMemory(H, window=None, **INIT).apply({"params": params["long_term"]}, X,
                                                         POSITIONS, None, 3)
  np.testing.assert_allclose(out + long_part, both, atol=1e-5)


def test_use_bias_gives_the_v2_output_projection_one_bias():
  kwargs = dict(num_heads=H, short_term_window=4, use_bias=True, **INIT)
  params, _ = _apply(LongShortMemory(**kwargs), X, POSITIONS, None, 3)
  assert "bias" in params["short_term"]["out"] and "bias" not in params["long_term"]["out"]
  params, _ = _apply(LongShortMemory(short_term=False, **kwargs), X, POSITIONS, None, 3)
  assert "bias" in params["long_term"]["out"]
  params, _ = _apply(LongShortMemory(**dict(kwargs, use_bias=False)), X, POSITIONS, None, 3)
  assert all("bias" not in level["out"] for level in params.values())


def test_feed_forward_memories():
  inits = dict(in_init=common.normal(0.1), out_init=common.normal(0.1))
  params, out = _apply(FeedForward(48, **inits), X)
  gate, up, down = (params[k]["kernel"] for k in ("gate", "up", "down"))
  np.testing.assert_allclose(out, (jax.nn.silu(X @ gate) * (X @ up)) @ down, atol=1e-5)
  params, out = _apply(FeedForward(48, activation="gelu", **inits), X)
  assert set(params) == {"up", "down"}
  np.testing.assert_allclose(
      out, jax.nn.gelu(X @ params["up"]["kernel"], approximate=True) @ params["down"]["kernel"],
      atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope", "alibi"])
def test_attention_matches_textbook_causal_attention(position):
  module = Attention(H, in_init=common.normal(0.3), out_init=common.normal(0.1), position=position)
  params, out = _apply(module, X, POSITIONS, None)
  q, k, v = (jnp.einsum("btc,chd->bthd", X, params[n]["kernel"]) for n in ("query", "key", "value"))
  if position == "rope":
    q, k = rope(q, POSITIONS, 10000.0), rope(k, POSITIONS, 10000.0)
  scores = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(C // H)
  if position == "alibi":
    slopes = np.asarray(alibi_slopes(H))[:, None, None]
    scores = scores - slopes * (np.arange(T)[:, None] - np.arange(T)[None])
  scores = jnp.where(np.tril(np.ones((T, T), bool)), scores, -jnp.inf)
  heads = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, -1), v)
  np.testing.assert_allclose(out, jnp.einsum("bthd,hdc->btc", heads, params["out"]["kernel"]),
                             atol=1e-5)


def test_rope_is_relative_and_alibi_slopes_are_standard():
  q, k = jax.random.normal(jax.random.key(3), (2, 1, 1, 1, 8))
  dot = lambda i, j: float(jnp.sum(rope(q, jnp.asarray([[i]]), 1e4) * rope(k, jnp.asarray([[j]]), 1e4)))
  assert abs(dot(3, 1) - dot(10, 8)) < 1e-4
  np.testing.assert_allclose(alibi_slopes(8), [2 ** -(i + 1) for i in range(8)])
  assert len(alibi_slopes(12)) == 12 and alibi_slopes(12)[:8] == alibi_slopes(8)


def test_long_short_attention_windows():
  module = LongShortAttention(H, short_term_window=3, in_init=common.normal(0.3),
                              out_init=common.normal(0.1))
  params, out = _apply(module, X, POSITIONS, None, 6)
  changed = module.apply({"params": params}, X.at[:, 4].set(2.0), POSITIONS, None, 6)
  np.testing.assert_allclose(changed[:, :4], out[:, :4], atol=1e-6)
  assert not np.allclose(changed[:, 4], out[:, 4])
