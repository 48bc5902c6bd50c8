"""RegBench end to end: the tiny config trains both models, evaluates them, and collects."""

import json

import numpy as np
import pytest

from experiments.configs import regbench as regbench_config
from mosaics_jax import storage
from mosaics_jax.evaluate import regbench
from mosaics_jax.train import trainer
from tests.test_storage import bucket  # noqa: F401  (the fixture)


def test_config_arguments_and_search_space():
  config = regbench_config.get_config("n=2500,width=256,layers=4,heads=2,epochs=400,lr=2.5e-4")
  assert config.data.regbench_train_pfas == 2500
  assert config.models.mosaic.embed_dim == 256 and config.models.mosaic.persistent_slots == 896
  assert config.train.num_steps == 79 * 400 and config.optimizer.learning_rate == 2.5e-4
  assert len(regbench_config.search_grid()) == 5 * 5 * 3 * 2 * 2 * 2
  with pytest.raises(ValueError, match="Unknown regbench arguments"):
    regbench_config.get_config("n=100,depth=3")


@pytest.mark.slow
def test_tiny_run_and_collect(tmp_path, bucket):  # noqa: F811
  results = trainer.train_and_evaluate(regbench_config.get_config("tiny"), str(tmp_path / "n100"))
  for result in results.values():
    assert {"test_accuracy", "test_tvd", "in_distribution_accuracy",
            "in_distribution_tvd"} <= set(result.metrics)
    assert 0 <= result.metrics["test_accuracy"] <= 1 and 0 <= result.metrics["test_tvd"] <= 1
  saved = json.loads((tmp_path / "n100" / "results.json").read_text())
  assert saved["mosaic"]["metrics"] == pytest.approx(results["mosaic"].metrics)
  table = regbench.collect([str(tmp_path / "n100")], "gs://evals/regbench")
  assert "| 100 | mosaic |" in table and "in-context 3-gram" in table
  assert "| 0.925 | 0.569 |" in table  # the paper's numbers beside ours
  metrics = results["mosaic"].metrics
  assert 0 < metrics["test_entropy"] <= np.log(20) + 1e-6 and 0 < metrics["test_legal_mass"] < 1
  assert metrics["test_cross_entropy"] >= metrics["test_true_entropy"] > 0
  row = next(line for line in table.splitlines() if line.startswith("| 100 | mosaic |"))
  assert f"| {metrics['test_entropy']:.3f} | {metrics['test_legal_mass']:.3f} |" in row
  assert storage.path("gs://evals/regbench/regbench.png").stat().length > 10_000
  assert bucket.appends_refused == 0


def test_model_distributions_are_probabilities():
  import jax
  from mosaics_jax import models
  from mosaics_jax.data import regbench as data

  model = models.build_model(models.model_config(
      "mosaic_v1_gpt2_small", num_layers=1, embed_dim=16, num_heads=2, vocab_size=20,
      persistent_slots=8))
  params = models.init_params(model, jax.random.key(0))
  instances = data.make_splits(5, held_out=4)["test"].instances
  out = regbench.model_distributions(model, params, instances, batch_size=3, bucket=128)
  assert [o.shape for o in out] == [(len(x) - 1, 20) for x in instances]
  np.testing.assert_allclose([o.sum(-1) for o in out][0], 1.0, rtol=1e-5)
