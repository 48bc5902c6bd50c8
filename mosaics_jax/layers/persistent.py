"""Persistent memories: what a model keeps from training, in place of the transformer MLP.

* ``PersistentMemory`` (v1): a per-head softmax over N learned key/value slots, queried with
  a leaky-average key (so the query is slightly temporal).
* ``FeedForward``: SwiGLU W2 (SiLU(W1 x) * W3 x) (v2, Llama baselines; v2 uses this dense
  form, a feed-forward layer and a key/value memory being interchangeable, Sukhbaatar et al.
  2019) or GELU (GPT-2 baselines).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax.kernels import slots
from mosaics_jax.layers import axes
from mosaics_jax.layers import common
from mosaics_jax.layers.cache import Chunk
from mosaics_jax.layers.contextual import v1_key_scale
from mosaics_jax.layers.features import EXP_PARAM_SCALE, LeakyKeys


class PersistentMemory(nn.Module):
  """v1 persistent memory (official ``PersistentAssoMemBlock`` + ``Pmem``).

  r_t = mean_p softmax_j(q_t . K_p[h, j]) V_p[h, j], q_t = unit key x exp(min(10 kb, 5))^2
  (the stored keys are raw parameters, so the whole bandwidth sits on the query), then
  y_t = W_o concat_h r_t exp(10 vb). Dropout acts on the slot probabilities. The read itself
  is ``kernels/slots.py`` (``implementation``: which path; by default none keeps the
  (B, T, H, N) probabilities for the backward pass).
  """

  num_heads: int
  num_slots: int
  proj_init: common.Initializer
  out_init: common.Initializer
  count: int = 1
  variant: str = "library"
  use_bias: bool = False
  prob_dropout: float = 0.0
  implementation: str | None = None
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, segment_ids: jax.Array | None = None,
               deterministic: bool = True, chunk: Chunk | None = None) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    queries = LeakyKeys(self.num_heads, head_dim, self.proj_init, self.use_bias, self.dtype,
                        name="keys")(x, segment_ids, chunk)
    key_scale = common.param_with_axes(self, "key_scale", nn.initializers.constant(0.1),
                                       (self.num_heads,), (axes.HEADS,))
    queries = queries * v1_key_scale(key_scale, power=2, variant=self.variant)[:, None]
    self.sow("intermediates", "key_scaled", queries)
    queries = nn.with_logical_constraint(queries.astype(self.dtype), axes.PER_HEAD)

    slot_shape = (self.count, self.num_heads, self.num_slots, head_dim)
    slot_names = (None, axes.HEADS, axes.SLOTS, axes.HEAD_DIM)
    slot_init = common.normal(head_dim ** -0.5)
    slot_keys = common.param_with_axes(self, "slot_keys", slot_init, slot_shape, slot_names)
    slot_values = common.param_with_axes(self, "slot_values", slot_init, slot_shape, slot_names)

    dropout_active = self.prob_dropout > 0.0 and not deterministic
    retrieved = slots.read_slots(
        queries, slot_keys, slot_values, dropout_rate=self.prob_dropout if dropout_active else 0.0,
        dropout_rng=self.make_rng("dropout") if dropout_active else None,
        implementation=self.implementation)
    self.sow("intermediates", "retrieved", retrieved)
    value_scale = common.param_with_axes(self, "value_scale", nn.initializers.constant(-0.05),
                                         (self.num_heads,), (axes.HEADS,))
    out = (retrieved * jnp.exp(EXP_PARAM_SCALE * value_scale)[:, None]).astype(self.dtype)
    out = nn.with_logical_constraint(out, axes.PER_HEAD)
    out = common.from_heads(width, init=self.out_init, use_bias=self.use_bias, dtype=self.dtype,
                            name="out")(out)
    return nn.Dropout(self.residual_dropout)(out, deterministic)


class FeedForward(nn.Module):
  """The dense persistent memory of v2 and of the baselines.

  ``swiglu`` (v2, Llama): ``down`` (SiLU(``gate`` x) * ``up`` x), i.e. W2 (SiLU(W1 x) * W3 x).
  ``gelu`` (GPT-2): ``down`` GELU_tanh(``up`` x).
  """

  hidden_dim: int
  in_init: common.Initializer
  out_init: common.Initializer
  activation: str = "swiglu"
  use_bias: bool = False
  residual_dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    kwargs = dict(init=self.in_init, use_bias=self.use_bias, dtype=self.dtype)
    hidden = common.dense(self.hidden_dim, axes.EMBED, axes.MLP, name="up", **kwargs)(x)
    if self.activation == "swiglu":
      gate = common.dense(self.hidden_dim, axes.EMBED, axes.MLP, name="gate", **kwargs)(x)
      hidden = nn.silu(gate) * hidden
    elif self.activation == "gelu":
      hidden = nn.gelu(hidden, approximate=True)
    else:
      raise ValueError(f"Unknown activation {self.activation!r}; use 'swiglu' or 'gelu'.")
    hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.MLP))
    out = common.dense(x.shape[-1], axes.MLP, axes.EMBED, init=self.out_init,
                       use_bias=self.use_bias, dtype=self.dtype, name="down")(hidden)
    return nn.Dropout(self.residual_dropout)(out, deterministic)
