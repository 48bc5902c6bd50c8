"""The evaluation command lines in-process (evaluate/command.py): on a mesh of 8 fake devices
as on one, and writing to a bucket (the gs:// fake of tests/test_storage.py)."""

import json

import numpy as np
import pytest

from mosaics_jax import storage
from mosaics_jax.evaluate import command, extrapolation, position_loss
from mosaics_jax.train import trainer
from tests.test_storage import bucket  # noqa: F401  (the fixture)
from tests.train.test_trainer import tiny

TEXT = "package:tinystories/validation.txt"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("run")
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 2, "train.eval_every": 0}), str(path))
  return path


def test_on_a_mesh_as_on_one_device_and_into_a_bucket(workdir, bucket):  # noqa: F811
  args = [f"--run={workdir}:mosaic", f"--text={TEXT}", "--windows=8"]
  one = command.run(position_loss, args + ["--output=gs://evals/one"])
  meshed = command.run(position_loss, args + ["--mesh=2,4,1", "--output=gs://evals/mesh"])
  np.testing.assert_allclose(meshed["curves"][next(iter(meshed["curves"]))],
                             one["curves"][next(iter(one["curves"]))], rtol=1e-5, atol=1e-5)
  saved = json.loads(storage.path("gs://evals/mesh/position_loss.json").read_text())
  assert saved["windows"] == 8
  assert storage.path("gs://evals/mesh/position_loss.png").read_bytes()[:4] == b"\x89PNG"
  args = [f"--run={workdir}:mosaic", f"--text={TEXT}", "--windows=2", "--multiples=1,2"]
  one = command.run(extrapolation, args + ["--output=gs://evals/x1"])
  meshed = command.run(extrapolation, args + ["--mesh=1,8,1", "--output=gs://evals/x8"])
  for k in (1, 2):
    assert meshed["mosaic"][k]["loss"] == pytest.approx(one["mosaic"][k]["loss"], rel=1e-5)
  assert "| mosaic |" in storage.path("gs://evals/x8/extrapolation.md").read_text()
  assert bucket.appends_refused == 0
  with pytest.raises(Exception, match="give three integers"):
    command.run(position_loss, args[:2] + ["--mesh=8"])
