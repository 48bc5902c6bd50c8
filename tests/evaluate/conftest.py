"""One tiny trained experiment (quickstart:tiny, the Memory Mosaic, 2 steps) shared by the
evaluation tests that read a run: trained once per test process."""

import pytest

from mosaics_jax.train import trainer
from tests.train.test_trainer import tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_run")
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 2, "train.eval_every": 0}), str(path))
  return path
