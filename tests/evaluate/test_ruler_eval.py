"""RULER-style evaluation: tables, and the command line on a tiny trained experiment."""

import json

import pytest

from experiments import registry
from mosaics_jax import storage
from mosaics_jax.evaluate import command, ruler as ruler_eval
from mosaics_jax.train import trainer
from tests.test_storage import bucket  # noqa: F401  (the fixture)



def test_table():
  results = {
      "mosaic": {"context_length": 64, "tasks": {"qa": {1: 50.0, 2: 25.0}},
                 "overall": {1: 50.0, 2: 25.0}},
      "gpt2": {"context_length": 64, "tasks": {"qa": {1: 75.0}}, "overall": {1: 75.0}}}
  markdown = ruler_eval.table(results, [1, 2])
  assert "| model | task | 1x (64 tokens) | 2x (128 tokens) |" in markdown
  assert "| mosaic | **overall** | 50.0 | 25.0 |" in markdown
  assert "| gpt2 | qa | 75.0 | - |" in markdown


@pytest.mark.slow
def test_command_line_on_a_tiny_experiment(tmp_path, bucket):  # noqa: F811
  config = registry.get_config("ruler_v2", "tiny")
  config.train.models = "mosaic,transformer"
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  command.run(ruler_eval, [f"--run={tmp_path / 'run'}:mosaic", f"--run={tmp_path / 'run'}:transformer",
                           "--multiples=1,2", "--samples=2", "--output=gs://evals/ruler"])
  summary = json.loads(storage.path("gs://evals/ruler/ruler.json").read_text())
  assert summary["samples"] == 2 and set(summary["runs"]) == {"mosaic", "transformer"}
  mosaic = summary["runs"]["mosaic"]
  assert set(mosaic["tasks"]) == {"niah_single", "niah_multikey"}  # the trained tasks
  assert set(mosaic["overall"]) == {"1", "2"} and mosaic["context_length"] == 128
  assert all(0.0 <= score <= 100.0 for scores in mosaic["tasks"].values()
             for score in scores.values())
  assert len(mosaic["examples"]["niah_single"]["2"]["answers"][0]) == 7
  markdown = storage.path("gs://evals/ruler/ruler.md").read_text()
  assert "| transformer | **overall** |" in markdown and "2x (256 tokens)" in markdown
  assert storage.path("gs://evals/ruler/ruler.png").stat().length > 5_000
  assert bucket.appends_refused == 0
