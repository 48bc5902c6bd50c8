"""Next-token cross-entropy, in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def token_losses(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """(B, T) float32 cross-entropies of (B, T, V) logits; targets < 0 give an ignored 0-id loss."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         jnp.maximum(targets, 0))


def mean_loss(losses: jax.Array, targets: jax.Array,
              weights: jax.Array | None = None) -> jax.Array:
  """Mean of (B, T) token losses over the positions whose target is >= 0 (the official
  ``ignore_index=-1``), ``weights`` (B, T) further weighting them (0 for padding)."""
  keep = targets >= 0
  if weights is not None:
    keep = keep * weights
  keep = keep.astype(jnp.float32)
  return jnp.sum(losses * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy of (B, T, V) logits against (B, T) targets (see ``mean_loss``)."""
  return mean_loss(token_losses(logits, targets), targets, weights)


def chunked_token_losses(hidden: jax.Array, weight: jax.Array, targets: jax.Array,
                         scale: float, chunk: int) -> jax.Array:
  """``token_losses`` of the logits ``scale * hidden @ weight``, ``chunk`` tokens at a time.

  hidden (B, T, C) and weight (C, V) in the matmul dtype (float32 accumulation). Each chunk is
  rematerialised, so the forward and the backward pass hold one chunk's (B, chunk, V) logits
  rather than the batch's; the price is the output layer's matmul once more in the backward
  pass. Returns (B, T) float32.
  """
  batch, length = hidden.shape[:2]
  chunk = min(chunk, length)
  count = -(-length // chunk)
  pad = count * chunk - length
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  as_chunks = lambda x: jnp.moveaxis(x.reshape(batch, count, chunk, *x.shape[2:]), 1, 0)

  @jax.checkpoint
  def one(hidden, targets, weight):
    logits = jnp.einsum("btc,cv->btv", hidden, weight, preferred_element_type=jnp.float32)
    return token_losses(logits * scale, targets)

  losses = jax.lax.map(lambda x: one(*x, weight), (as_chunks(hidden), as_chunks(targets)))
  return jnp.moveaxis(losses, 0, 1).reshape(batch, count * chunk)[:, :length]
