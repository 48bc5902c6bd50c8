"""The official training recipe as an optax optimizer.

AdamW (betas 0.9/0.95, eps 1e-8) with weight decay only on parameters of 2+ dimensions
(matrices, embeddings, persistent-memory slots; not norms, biases or per-head scalars),
global-norm gradient clipping, and a learning rate that rises linearly from 0 over
``warmup_steps``, follows a cosine down to ``min_learning_rate`` at ``decay_steps``, and stays
there (Library/utils.py ``get_cosine_lr``; v2: cosine to LR/100).
"""

from __future__ import annotations

import jax
import optax

from mosaics_jax.train.config import ConfigError


def learning_rate(config, num_steps: int) -> optax.Schedule:
  decay_steps = config.decay_steps or num_steps
  if config.warmup_steps > decay_steps:
    raise ConfigError(f"optimizer.warmup_steps={config.warmup_steps} exceeds decay_steps="
                      f"{decay_steps} (optimizer.decay_steps, or train.num_steps when it is 0): "
                      "lower warmup_steps or raise decay_steps.")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=decay_steps, end_value=config.min_learning_rate)


def decay_mask(params):
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(config, num_steps: int) -> optax.GradientTransformation:
  """config: the ``optimizer`` section of an experiment."""
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(),
      optax.adamw(learning_rate(config, num_steps), b1=config.b1, b2=config.b2, eps=config.eps,
                  weight_decay=config.weight_decay, mask=decay_mask))
