"""The evaluation command lines in-process (evaluate/command.py): on a mesh of 8 fake devices
as on one, and writing to a bucket (the gs:// fake of tests/test_storage.py)."""

import json

import numpy as np
import pytest

from mosaics_jax import storage
from mosaics_jax.evaluate import command, extrapolation, position_loss, story_prompts
from mosaics_jax.train import trainer
from mosaics_jax.train.config import ConfigError
from tests.test_storage import bucket  # noqa: F401  (the fixture)
from tests.train.test_trainer import tiny

TEXT = "package:tinystories/validation.txt"


def test_on_a_mesh_as_on_one_device_and_into_a_bucket(tiny_run, bucket):  # noqa: F811
  args = [f"--run={tiny_run}:mosaic", f"--text={TEXT}", "--windows=8"]
  one = command.run(position_loss, args + ["--output=gs://evals/one"])
  meshed = command.run(position_loss, args + ["--mesh=2,4,1", "--output=gs://evals/mesh"])
  np.testing.assert_allclose(meshed["curves"][next(iter(meshed["curves"]))],
                             one["curves"][next(iter(one["curves"]))], rtol=1e-5, atol=1e-5)
  saved = json.loads(storage.path("gs://evals/mesh/position_loss.json").read_text())
  assert saved["windows"] == 8
  assert storage.path("gs://evals/mesh/position_loss.png").read_bytes()[:4] == b"\x89PNG"
  args = [f"--run={tiny_run}:mosaic", f"--text={TEXT}", "--windows=2", "--multiples=1,2"]
  one = command.run(extrapolation, args + ["--output=gs://evals/x1"])
  meshed = command.run(extrapolation, args + ["--mesh=1,8,1", "--output=gs://evals/x8"])
  for k in (1, 2):
    assert meshed["mosaic"][k]["loss"] == pytest.approx(one["mosaic"][k]["loss"], rel=1e-5)
  assert "| mosaic |" in storage.path("gs://evals/x8/extrapolation.md").read_text()
  assert bucket.appends_refused == 0
  with pytest.raises(Exception, match="give three integers"):
    command.run(position_loss, args[:2] + ["--mesh=8"])


def test_story_prompts_on_a_mesh_as_on_one_device_and_into_a_bucket(tiny_run, bucket):  # noqa: F811
  args = [f"--run={tiny_run}:mosaic", f"--run={tiny_run}:mosaic", "--tokens=4"]
  one = command.run(story_prompts, args + ["--output=gs://evals/prompts1"])
  meshed = command.run(story_prompts, args + ["--mesh=1,8,1", "--output=gs://evals/prompts8"])
  assert meshed == one and one.count("\n") == 24 + 2
  assert storage.path("gs://evals/prompts8/story_prompts.md").read_text().endswith(one)
  assert bucket.appends_refused == 0


def test_evaluations_after_training_equal_their_command_lines(tmp_path):
  evaluators = f"extrapolation --text={TEXT} --multiples=1,2 --windows=2; story_prompts --tokens=3"
  results = trainer.train_and_evaluate(
      tiny(**{"train.num_steps": 2, "train.eval_every": 0, "train.evaluators": evaluators}),
      str(tmp_path))
  metrics = results["mosaic"].metrics
  assert set(metrics) == {f"extrapolation/{k}/{key}" for k in (1, 2)
                          for key in ("loss", "windows")} | {"extrapolation/2/beyond"}
  by_hand = command.run(extrapolation, [f"--run={tmp_path}:mosaic", f"--text={TEXT}",
                                        "--multiples=1,2", "--windows=2",
                                        f"--output={tmp_path / 'by_hand'}"])
  assert metrics["extrapolation/2/loss"] == pytest.approx(by_hand["mosaic"][2]["loss"], rel=1e-5)
  saved = json.loads((tmp_path / "results.json").read_text())["mosaic"]["metrics"]
  assert saved == pytest.approx(metrics)
  written = tmp_path / "mosaic" / "evaluations"
  assert (written / "extrapolation" / "extrapolation.md").exists()
  assert "| # | prompt |" in (written / "story_prompts" / "story_prompts.md").read_text()
  for bad, message in (("rulers", "known: .*'ruler'"), ("ruler --sample=3", "sample"),
                       ("ruler --output=/tmp/x", "leave them out"),
                       ("regbench --samples=1", "takes no flags")):
    with pytest.raises(ConfigError, match=message):
      trainer.train_and_evaluate(tiny(**{"train.evaluators": bad}), str(tmp_path / "bad"))
  assert not (tmp_path / "bad" / "mosaic").exists()  # refused before any training
