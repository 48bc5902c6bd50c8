"""Three moons (v1 paper section 3, appendix A): sequences of three moons seen from the sun.

Each step has 6 features, (sin, cos) of each moon's angle 2 pi t / p_j + 0.3. The official
code (ThreeMoons/planets.py) takes every triple of periods from {0.5, 1, ..., 3.5}, keeps the
nine with the shortest joint period lcm(p1, p2, p3) (at one decimal) and holds the last out:
the model is trained on 8 period triples and validated on one it never saw. Time is sampled
so that at least ``min_periods`` joint periods fit in a sequence; each sequence starts at a
random step in [0, 10000 - 2 length - 1).
"""

from __future__ import annotations

import dataclasses
import math
from functools import reduce

import numpy as np

# The nine triples in the order the official code selects them (np.argsort of the joint
# periods, ties as that sort leaves them); the last is the validation triple.
TRAIN_PERIODS = ((0.5, 1, 2), (0.5, 1, 1.5), (0.5, 1, 3), (0.5, 1.5, 3), (1, 1.5, 3),
                 (0.5, 1, 2.5), (1, 1.5, 2), (0.5, 1.5, 2))
VALIDATION_PERIODS = (1, 2, 3)
PHASE = 0.3
TOTAL_STEPS = 10000


def joint_period(periods) -> float:
  """lcm of periods given to one decimal."""
  tenths = [int(round(p * 10)) for p in periods]
  return reduce(math.lcm, tenths) / 10


@dataclasses.dataclass(frozen=True)
class Moons:
  length: int = 800  # steps per sequence
  min_periods: int = 3  # joint periods (of the slowest triple) that fit in a sequence

  @property
  def time_step(self) -> float:
    longest = max(joint_period(p) for p in TRAIN_PERIODS + (VALIDATION_PERIODS,))
    return longest * self.min_periods / self.length

  def in_steps(self, period: float) -> float:
    return period / self.time_step

  def sequences(self, periods, starts, length: int | None = None) -> np.ndarray:
    """(B, length, 6) float32 for period triples (B, 3) starting at steps (B,)."""
    length = length or self.length
    periods = np.asarray(periods, np.float64)
    t = (np.asarray(starts)[:, None] + np.arange(length)[None]) * self.time_step  # (B, T)
    angle = 2 * np.pi * t[:, :, None] / periods[:, None, :] + PHASE  # (B, T, 3)
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(
        *angle.shape[:2], 6).astype(np.float32)

  def batch(self, rng: np.random.Generator, size: int, periods=None, length: int | None = None):
    """Random sequences: each a random training triple (or the given ones) at a random start."""
    if periods is None:
      periods = np.asarray(TRAIN_PERIODS)[rng.integers(0, len(TRAIN_PERIODS), size)]
    else:
      periods = np.broadcast_to(np.asarray(periods, np.float64), (size, 3))
    starts = rng.integers(0, TOTAL_STEPS - 2 * self.length - 1, size)
    return self.sequences(periods, starts, length)
