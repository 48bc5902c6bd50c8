"""Three moons: data, the 54-parameter networks, fast rollouts, the runner."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import three_moons
from mosaics_jax import storage
from mosaics_jax.data.moons import TRAIN_PERIODS, VALIDATION_PERIODS, Moons, joint_period
from mosaics_jax.evaluate import moons as evaluation
from mosaics_jax.models.moons import MoonsNetwork
from tests.test_storage import bucket  # noqa: F401  (the fixture)


def test_period_triples_and_sequences():
  assert len(TRAIN_PERIODS) == 8 and VALIDATION_PERIODS not in TRAIN_PERIODS
  assert joint_period((0.5, 1, 2.5)) == 5.0 and joint_period(VALIDATION_PERIODS) == 6.0
  moons = Moons(800, 3)
  assert moons.in_steps(6.0) == pytest.approx(800 / 3)  # 3 joint periods of the slowest triple
  x = moons.sequences([[1, 2, 3]], [0], 5)
  t = np.arange(5) * moons.time_step
  np.testing.assert_allclose(x[0, :, 0], np.sin(2 * np.pi * t / 1 + 0.3), atol=1e-6)
  np.testing.assert_allclose(x[0, :, 5], np.cos(2 * np.pi * t / 3 + 0.3), atol=1e-6)
  batch = moons.batch(np.random.default_rng(0), 4)
  assert batch.shape == (4, 800, 6) and np.allclose(batch[..., 0::2] ** 2 + batch[..., 1::2] ** 2, 1)


@pytest.mark.parametrize("heads", [1, 3])
def test_networks_have_54_parameters_and_are_causal(heads):
  model = MoonsNetwork(heads)
  x = jnp.asarray(Moons(60).batch(np.random.default_rng(1), 2))
  params = model.init(jax.random.key(0), x)["params"]
  assert sum(p.size for p in jax.tree_util.tree_leaves(params)) == 54
  out = model.apply({"params": params}, x)
  changed = model.apply({"params": params}, x.at[:, 30].set(0.0))
  np.testing.assert_allclose(changed[:, :30], out[:, :30], atol=1e-6)  # output t reads x_<=t
  assert np.all(np.asarray(out[:, 0]) == 0)


def test_fast_rollouts_equal_feeding_predictions_back():
  model, moons = MoonsNetwork(3), Moons(100)
  x = moons.batch(np.random.default_rng(2), 3)
  params = model.init(jax.random.key(1), x)["params"]
  apply = jax.jit(lambda b: model.apply({"params": params}, b))

  def naive(context, horizon=25):
    buffer = np.array(x)
    for i in range(horizon):
      buffer[:, context + i] = np.asarray(apply(jnp.asarray(buffer)))[:, context - 1 + i]
    return np.mean(np.abs(buffer[:, context:context + horizon] - x[:, context:context + horizon]))

  contexts = [1, 2, 37, 75]
  np.testing.assert_allclose(evaluation.rollout_errors(model, params, x, contexts, 25),
                             [naive(c) for c in contexts], rtol=1e-5)


def test_runner_tiny(bucket):  # noqa: F811
  summary = evaluation.run(three_moons.get_config("tiny"), "gs://evals/moons")
  assert set(summary) == {"1 head", "3 heads"}
  for result in summary.values():
    assert result["parameters"] == 54 and np.isfinite(result["final_loss"])
    assert set(result["selectivity"]) == {"phi", "psi", "z"}
  written = json.loads(storage.path("gs://evals/moons/moons.json").read_text())
  assert len(written["curves"]["held-out triple"]["3 heads"]) == len(written["contexts"])
  for name in ("moons_error.png", "moons_matrices.png"):
    assert storage.path(f"gs://evals/moons/{name}").stat().length > 10_000
  assert bucket.appends_refused == 0


def test_selectivity():
  assert evaluation.head_selectivity(np.eye(3)) == 1.0
  assert evaluation.head_selectivity(np.ones((3, 3))) == pytest.approx(1 / 3)
