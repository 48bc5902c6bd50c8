"""The three-moons networks of the v1 paper (section 3, appendix A): 54 parameters.

One contextual memory on the three moons' positions, read as three complex numbers
z_j = sin_j + i cos_j. Three 3x3 complex matrices: keys k_t = W_phi z_t, values
v_t = W_psi z_{t+1} (one step ahead), output W_z applied to the retrieved value; the memory
reads pairs s < t with weights softmax_s(beta Re(k_t^H k_s)), beta = 50, and, as in the official
code (ThreeMoons/model.py), keys are neither averaged nor normalised. With 1 head the memory
works on all three complex dimensions at once; with 3 heads each head has one complex
dimension, and training disentangles them: one head per moon.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from mosaics_jax.kernels import retrieval


def _complex_init(key, shape, dtype=jnp.float32):
  """The official init: a real nn.Linear(6, 6) draw U(+-1/sqrt(6)) folded into complex form,
  so each real or imaginary part is the mean of two such draws."""
  bound = 6 ** -0.5
  draws = jax.random.uniform(key, (2, *shape), dtype, -bound, bound)
  return draws.mean(axis=0)


class ComplexLinear(nn.Module):
  """z @ (real + i imag): a complex matrix as two real (in, out) parameters."""

  features: int = 3

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    shape = (z.shape[-1], self.features)
    matrix = self.param("real", _complex_init, shape) + 1j * self.param("imag", _complex_init,
                                                                         shape)
    return z @ matrix


class MoonsNetwork(nn.Module):
  num_heads: int = 3  # 1 (one 3-dim complex memory) or 3 (three 1-dim complex memories)
  bandwidth: float = 50.0

  def setup(self):
    self.phi, self.psi, self.z = ComplexLinear(name="phi"), ComplexLinear(name="psi"), \
        ComplexLinear(name="z")

  def _heads(self, c: jax.Array) -> jax.Array:
    """(..., 3) complex -> (..., H, 2 * 3 / H) real: Re(a^H b) is the real dot product."""
    c = c.reshape(*c.shape[:-1], self.num_heads, 3 // self.num_heads)
    return jnp.concatenate([c.real, c.imag], axis=-1)

  def _complex(self, r: jax.Array) -> jax.Array:
    half = r.shape[-1] // 2
    c = r[..., :half] + 1j * r[..., half:]
    return c.reshape(*c.shape[:-2], 3)

  def _keys_values(self, x: jax.Array):
    moons = x[..., 0::2] + 1j * x[..., 1::2]
    keys = self.phi(moons)
    values = self.psi(moons)
    values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    return self._heads(keys), self._heads(values)

  def _output(self, retrieved: jax.Array) -> jax.Array:
    out = self.z(self._complex(retrieved))
    return jnp.stack([out.real, out.imag], axis=-1).reshape(*out.shape[:-1], 6)

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, T, 6) positions -> (B, T, 6) predictions of the next step (0 at t = 0)."""
    keys, values = self._keys_values(x)
    retrieved = retrieval.retrieve(self.bandwidth * keys, keys, values, skip=1,
                                   implementation="xla")
    return self._output(retrieved)

  def features(self, x: jax.Array):
    """The real per-head keys and values of a whole sequence (value t holds x_{t+1})."""
    return self._keys_values(x)

  def encode_step(self, x: jax.Array):
    """For one step x (B, 6): its key W_phi x and W_psi x, the value of the pair before it."""
    moons = x[..., 0::2] + 1j * x[..., 1::2]
    return self._heads(self.phi(moons)), self._heads(self.psi(moons))

  def output(self, retrieved: jax.Array) -> jax.Array:
    """Per-head retrieved values (..., H, 2 * 3 / H) -> predicted positions (..., 6)."""
    return self._output(retrieved)
