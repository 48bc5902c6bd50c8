"""Language-model analyses (v1 Figures 7, 8, 13-16): position loss, attention maps, depth
curves; units on synthetic inputs, then the command lines on a tiny trained experiment."""

import json
import pathlib

import jax
import numpy as np
import pytest

from experiments import registry
from mosaics_jax import models, storage
from mosaics_jax.data import corpus
from mosaics_jax.evaluate import (attention_maps, command, depth_curves, extrapolation,
                                  position_loss)
from mosaics_jax.train import trainer
from tests.test_storage import bucket  # noqa: F401  (the fixture)

REPO = pathlib.Path(__file__).resolve().parents[2]
OOD_TEXT = str(REPO.parent / "shared" / "data" / "simplewiki_turkcorpus" /
               "test.8turkers.tok.simp")


def test_smoothing_and_crossover():
  np.testing.assert_allclose(position_loss.smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2),
                             [1.0, 2.0, 4.0, 6.0])
  positions = np.arange(100.0)
  falling, flat = 5.0 - positions / 25, np.full(100, 3.0)
  assert position_loss.crossover(falling, flat, width=1) == 51  # 5 - p/25 < 3 from p = 51
  assert position_loss.crossover(flat, falling, width=1) is None
  assert position_loss.crossover(flat - 1, flat, width=1) == 0
  with pytest.raises(corpus.DataError, match="fewer than one window"):
    position_loss.consecutive_windows(np.arange(10), 16, 4)


def test_position_losses_average_per_position():
  model = models.build_model(models.model_config(
      "mosaic_v1_gpt2_small", num_layers=1, embed_dim=16, num_heads=2, vocab_size=64,
      persistent_slots=8))
  params = models.init_params(model, jax.random.key(0))
  windows = position_loss.consecutive_windows(np.arange(200) % 64, 16, 5)
  assert windows.shape == (5, 17)
  curve = position_loss.position_losses(model, params, windows, batch_size=4)  # a ragged batch
  logits = model.apply({"params": params}, windows[:, :-1])
  expected = -np.take_along_axis(jax.nn.log_softmax(logits), windows[:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(curve, expected.mean(0), rtol=1e-5)


def test_peak_width_and_leaky_coefficients():
  weights = np.array([0.0, 0.01, 0.02, 0.3, 0.5, 0.6, 0.0])  # last position unreadable (skip 1)
  assert attention_maps.peak_width(weights) == 3  # 0.6, 0.5, 0.3 >= 0.3; then 0.02
  assert attention_maps.peak_width(np.ones(5), skip=0) == 5
  params = {"block_0": {"context": {"keys": {"leak": np.array([0.05, -0.2])}}},
            "block_1": {"persistent": {}}}
  np.testing.assert_allclose(attention_maps.leaky_coefficients(params)["block_0/context"],
                             np.exp([-0.5, -2.0]))


@pytest.mark.slow
def test_command_lines_on_a_tiny_experiment(tmp_path, bucket, capsys):  # noqa: F811
  if not pathlib.Path(OOD_TEXT).exists():
    pytest.skip(f"{OOD_TEXT} not available")
  workdirs = []
  for depth in (1, 2):
    workdir = tmp_path / f"d{depth}"
    config = registry.get_config("babistories_v1", f"tiny,depth={depth}" +
                                 (",positions" if depth == 1 else ""))
    with config.unlocked():  # no samples; one model at depth 2 is enough for the curves
      config.report.prompts = []
      config.train.models = "" if depth == 1 else "mosaic"
    trainer.train_and_evaluate(config, str(workdir))
    workdirs.append(str(workdir))

  runs = depth_curves.collect(workdirs)
  assert sorted(runs) == [1, 2] and set(runs[1]) == {"mosaic", "transformer", "transformer_rope",
                                                     "transformer_alibi"}
  assert set(runs[2]) == {"mosaic"}
  command.run(depth_curves, [f"--workdirs={','.join(workdirs)}", "--output=gs://evals/curves"])
  assert storage.path("gs://evals/curves/depth_curves.png").stat().length > 10_000
  assert "| 2 |" in storage.path("gs://evals/curves/depth_curves.md").read_text()

  command.run(position_loss, [f"--run={workdirs[0]}:mosaic", f"--run={workdirs[0]}:transformer",
                              f"--text={OOD_TEXT}", "--windows=4", "--output=gs://evals/ood"])
  summary = json.loads(storage.path("gs://evals/ood/position_loss.json").read_text())
  assert summary["seq_len"] == 32 and summary["windows"] == 4
  assert [len(c) for c in summary["curves"].values()] == [32, 32]
  assert "better than" in capsys.readouterr().out

  command.run(attention_maps, [*(f"--run={workdirs[0]}:{name}" for name in runs[1]),
                               f"--text={OOD_TEXT}", "--windows=3", "--multiples=1,3",
                               "--output=gs://evals/maps"])
  summary = json.loads(storage.path("gs://evals/maps/attention_maps.json").read_text())
  assert {"mosaic_1x", "mosaic_3x", "transformer_1x", "transformer_rope_3x",
          "transformer_alibi_3x"} <= set(summary) and "transformer_3x" not in summary
  assert summary["mosaic_3x"]["length"] == 96
  assert len(summary["mosaic_1x"]["leaky_vs_width"]["heads"]) == 2  # one block of 2 heads
  assert storage.path("gs://evals/maps/mosaic_3x.png").stat().length > 5_000
  assert bucket.appends_refused == 0


def test_removing_the_long_term_memory_is_zeroing_its_projection():
  config = models.model_config("mosaic_v2_small", num_layers=2, embed_dim=32, num_heads=2,
                               vocab_size=64, ffn_hidden_dim=64, short_term_window=4,
                               long_term_skip_train=(2, 4), long_term_skip_eval=2)
  model = models.build_model(config)
  params = models.init_params(model, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 64)
  ablated, ablated_params = extrapolation.without_long_term(model, params)
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 0 if "long_term" in jax.tree_util.keystr(path) else x, params)
  np.testing.assert_allclose(ablated.apply({"params": ablated_params}, tokens),
                             model.apply({"params": zeroed}, tokens), atol=1e-5)
  assert not np.allclose(ablated.apply({"params": ablated_params}, tokens),
                         model.apply({"params": params}, tokens), atol=1e-3)
  with pytest.raises(ValueError, match="no v2 long-term memory"):
    extrapolation.without_long_term(ablated, ablated_params)


@pytest.mark.slow
def test_v2_ablations_and_extrapolation_command_line(tmp_path, bucket, capsys):  # noqa: F811
  config = registry.get_config("v2_pretraining", "tiny,ablations")
  names = ("mosaic_fixed_m", "transformer_long_short")  # the ablations' own models
  with config.unlocked():
    config.report.prompts = []
    config.train.models = ",".join(names)
  trainer.train_and_evaluate(config, str(tmp_path / "v2"))
  command.run(extrapolation, [*(f"--run={tmp_path / 'v2'}:{name}" for name in names),
                              "--text=package:tinystories/validation.txt", "--multiples=1,2,4",
                              "--windows=2", "--output=gs://evals/ext"])
  results = json.loads(storage.path("gs://evals/ext/extrapolation.json").read_text())
  assert set(results) == set(names) | {"mosaic_fixed_m without long-term memory"}
  assert set(results["transformer_long_short"]) == {"1", "2", "4"}
  assert results["mosaic_fixed_m"]["1"]["beyond"] is None
  assert all(np.isfinite(row["loss"]) for rows in results.values() for row in rows.values())
  assert "| mosaic_fixed_m without long-term memory |" in capsys.readouterr().out
  assert storage.path("gs://evals/ext/extrapolation.png").read_bytes()[:4] == b"\x89PNG"
