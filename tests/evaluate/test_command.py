"""The evaluation command lines in-process (evaluate/command.py): on a mesh of 8 fake devices
as on one, and writing to a bucket (the gs:// fake of tests/test_storage.py)."""

import json

import numpy as np
import pytest

from mosaics_jax import storage
from mosaics_jax.evaluate import command, extrapolation, position_loss, story_prompts
from tests.test_storage import bucket  # noqa: F401  (the fixture)

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
