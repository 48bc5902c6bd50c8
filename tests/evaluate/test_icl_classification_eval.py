"""In-context classification scoring: greedy labels, constrained log-likelihoods against a plain
forward pass, the per-shot results, and the command line on a tiny trained experiment."""

import json

import jax
import numpy as np
import pytest

from experiments import registry
from mosaics_jax import models, storage
from mosaics_jax.data import icl_classification as icl, tokenizer as tokenizers
from mosaics_jax.evaluate import command, icl_classification as evaluation
from mosaics_jax.train import trainer
from tests.test_storage import bucket  # noqa: F401  (the fixture)

TASK = icl.Task(classes=3, prototype_words=4, example_words=2, vocabulary_words=30, seed=1)
SMALL = dict(num_layers=1, embed_dim=32, num_heads=2, vocab_size=384)
MEMORIES = dict(short_term_window=4, long_term_skip_train=(2, 4), long_term_skip_eval=2)


def test_greedy_scoring_reads_the_first_word():
  answers = ["class_03"] * 6 + ["sky"]
  continuations = ["class_03 input:", " class_03", "\nclass_03\ninput", "class_031", "class_0",
                   "", "sky"]
  assert [evaluation.predicted_label(c) == a for c, a in zip(continuations, answers)] == [
      True, True, True, False, False, False, True]
  assert evaluation.greedy_accuracy(continuations, answers) == pytest.approx(4 / 7)
  with pytest.raises(ValueError, match="as many continuations as answers"):
    evaluation.greedy_accuracy(["a"], ["a", "b"])


@pytest.mark.parametrize("preset,extra", [
    ("mosaic_v2_gpt2_small", dict(ffn_hidden_dim=64, **MEMORIES)),
    ("llama_gpt2_small_long_short", dict(mlp_hidden_dim=64, **MEMORIES))])
def test_candidate_log_likelihoods_match_a_forward_pass(preset, extra):
  model = models.build_model(models.model_config(preset, **SMALL, **extra))
  params = models.init_params(model, jax.random.key(0))
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, 384, n).tolist() for n in (5, 9, 7)]  # ragged, 2 batches of 2
  candidates = [[[10], [11, 12], [13, 14]], [[20, 21], [22], [23, 24]], [[30], [31], [32, 33]]]
  scores = evaluation.candidate_log_likelihoods(model, params, prompts, candidates, batch_size=2)
  # The same scores from one plain forward pass over every prompt + label, right-padded.
  sequences = [(prompt, label) for prompt, row in zip(prompts, candidates) for label in row]
  tokens = np.zeros((len(sequences), 11), np.int32)
  for row, (prompt, label) in enumerate(sequences):
    tokens[row, :len(prompt) + len(label)] = prompt + label
  log_probs = jax.nn.log_softmax(model.apply({"params": params}, tokens))
  expected = np.asarray([
      sum(log_probs[row, len(prompt) - 1 + j, t] for j, t in enumerate(label))
      for row, (prompt, label) in enumerate(sequences)]).reshape(3, 3)
  np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_results_per_kind_and_shots_and_learned_positions_skip_long_prompts():
  tokenizer = tokenizers.train_tokenizer(TASK.documents("train", 300, 3, 0.5), 384, "bpe")
  model = models.build_model(models.model_config("gpt2_small", **SMALL, context_length=48))
  params = models.init_params(model, jax.random.key(0))
  notes = []
  results = evaluation.evaluate_run(model, params, tokenizer, TASK, shots=[1, 3], episodes=3,
                                    batch_size=4, log=notes.append)
  assert set(results) == set(icl.LABEL_KINDS)
  assert all(list(rows) == [1] for rows in results.values())  # 3 shots need > 48 positions
  assert any("3 shots skipped" in note for note in notes)
  row = results["anonymous"][1]
  assert set(row["orders"]) == set(evaluation.ORDERS)
  for metric in ("accuracy", "constrained_accuracy"):
    assert row[metric] == max(o[metric] for o in row["orders"].values())
    assert 0.0 <= row[metric] <= 1.0
  markdown = evaluation.table({"gpt2": results}, chance=1 / 3)
  assert "| gpt2 | anonymous |" in markdown and "chance 33.3" in markdown


def test_only_workdirs_of_the_task_are_read(tmp_path):
  with pytest.raises(ValueError, match="is .* a training workdir"):
    evaluation.task_of_workdir(str(tmp_path / "missing"))
  (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "data": {"source": "text"}}))
  with pytest.raises(ValueError, match="not trained on the icl_classification data source"):
    evaluation.task_of_workdir(str(tmp_path))


@pytest.mark.slow
def test_train_then_the_command_line(tmp_path, bucket, capsys):  # noqa: F811
  config = registry.get_config("icl_classification", "tiny")
  config.train.models = "mosaic,transformer"
  trainer.train_and_evaluate(config, str(tmp_path / "icl"))
  command.run(evaluation, [*(f"--run={tmp_path / 'icl'}:{name}" for name in ("mosaic", "transformer")),
                           "--shots=1,2", "--episodes=3", "--batch_size=8", "--output=gs://evals/icl"])
  summary = json.loads(storage.path("gs://evals/icl/icl_classification.json").read_text())
  assert summary["chance"] == 0.25 and summary["episodes"] == 3
  assert set(summary["runs"]) == {"mosaic", "transformer"}
  for rows in summary["runs"].values():
    assert set(rows) == set(icl.LABEL_KINDS)
    assert all(set(kind) == {"1", "2"} for kind in rows.values())
  assert "| mosaic | anonymous |" in storage.path(
      "gs://evals/icl/icl_classification.md").read_text()
  assert "| transformer | semantic |" in capsys.readouterr().out
  assert storage.path("gs://evals/icl/icl_classification.png").stat().length > 10_000
  assert bucket.appends_refused == 0
