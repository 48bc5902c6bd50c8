"""The training program: end to end, resume, preemption, bad input."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from experiments.configs import quickstart
from mosaics_jax import models, storage
from mosaics_jax.data import DataError
from mosaics_jax.train import checkpoint, metrics, sharding, trainer
from mosaics_jax.train.config import ConfigError
from tests.train import logs

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny(**changes):
  """quickstart:tiny, Memory Mosaic only, with dotted-key changes."""
  config = quickstart.get_config("tiny")
  with config.unlocked():
    config.train.models = "mosaic"
    config.optimizer.decay_steps = 40  # the schedule must not depend on num_steps when resuming
    for key, value in changes.items():
      node = config
      *parents, leaf = key.split(".")
      for parent in parents:
        node = node[parent]
      node[leaf] = value
  return config


def final_params(run_dir):
  steps = checkpoint.Checkpoints(os.path.join(run_dir, "checkpoints"))
  step = steps.latest_step()
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(run_dir, "checkpoints", str(step), "state"))
  steps.close()
  return step, restored["params"]


def losses_by_step(run_dir):
  return {r["step"]: r["train/loss"] for r in metrics.read_metrics(run_dir) if "train/loss" in r}


def test_quickstart_tiny_end_to_end(tmp_path):
  results = trainer.train_and_evaluate(quickstart.get_config("tiny"), str(tmp_path))
  assert set(results) == {"mosaic", "transformer"}
  for name, result in results.items():
    assert result.step == 20 and not result.preempted
    assert np.isfinite(result.validation_loss) and result.validation_loss < np.log(2048)
    assert len(result.samples) == 3 and all(text for _, text in result.samples)
    events = next((tmp_path / name).glob("events.out.tfevents.*"))
    tags = {tag for _, tag, _ in logs.read_scalars(str(events))}
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "eval/loss",
            "train/tokens_per_second_per_device"} <= tags
    assert {tag for _, tag, _ in logs.read_histograms(str(events))} == {"params/norms"}
    assert (tmp_path / name / "checkpoints" / "20").is_dir()
  report = (tmp_path / "report.md").read_text()
  assert "| mosaic | Memory Mosaic v1 |" in report and "| transformer |" in report
  assert (tmp_path / "loss_curves.png").stat().st_size > 10_000
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 20
  peak = {name: max(r["train/learning_rate"] for r in metrics.read_metrics(str(tmp_path / name))
                    if "train/learning_rate" in r) for name in results}
  assert peak["transformer"] == pytest.approx(peak["mosaic"] / 2, rel=0.05)  # its override


def test_resume_continues_exactly(tmp_path):
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 12, "train.log_every": 1}),
                             str(tmp_path / "straight"), mode="train")
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 8, "train.log_every": 1}),
                             str(tmp_path / "split"), mode="train")
  results = trainer.train_and_evaluate(tiny(**{"train.num_steps": 12, "train.log_every": 1}),
                                       str(tmp_path / "split"), mode="train")
  assert results["mosaic"].step == 12
  straight, split = final_params(tmp_path / "straight" / "mosaic"), final_params(
      tmp_path / "split" / "mosaic")
  assert straight[0] == split[0] == 12
  jax.tree_util.tree_map(np.testing.assert_array_equal, straight[1], split[1])
  assert losses_by_step(tmp_path / "straight" / "mosaic") == losses_by_step(
      tmp_path / "split" / "mosaic")


@pytest.mark.slow
def test_resume_on_another_mesh(tmp_path):
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 10}), str(tmp_path / "a"), mode="train")
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 8}), str(tmp_path / "b"), mode="train")
  other_mesh = tiny(**{"train.num_steps": 10, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  trainer.train_and_evaluate(other_mesh, str(tmp_path / "b"), mode="train")
  a, b = final_params(tmp_path / "a" / "mosaic"), final_params(tmp_path / "b" / "mosaic")
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-4), a[1], b[1])
  # Parameters only, straight onto another mesh or one device: the same logits.
  tokens = jnp.asarray(np.arange(64).reshape(2, 32) % 50)
  runs = [checkpoint.load_run(tmp_path / "b", "mosaic"),
          checkpoint.load_run(tmp_path / "b", "mosaic", mesh=sharding.make_mesh(
              {"data": 1, "fsdp": 8, "tensor": 1}))]
  embedding = runs[1].params["token_embed"]["embedding"]
  assert len(embedding.sharding.device_set) == 8 and embedding.sharding.spec != (None, None)
  logits = [jax.jit(run.model.apply)({"params": run.params}, tokens) for run in runs]
  np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
  other_data = tiny(**{"train.num_steps": 12,
                       "data.train_files": "package:tinystories/*.txt"})
  with pytest.raises(checkpoint.CheckpointError, match="was trained on other data"):
    trainer.train_and_evaluate(other_data, str(tmp_path / "b"), mode="train")


def test_a_scanned_run_restores_into_either_layout(tmp_path):
  """Trained with scanned blocks; read back unrolled, or scanned on a mesh: the same logits.
  Resuming the training in the other layout is refused, naming the field."""
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 4, "models.mosaic.scan_layers": True}),
                             str(tmp_path), mode="train")
  tokens = jnp.asarray(np.arange(64).reshape(2, 32) % 50)
  runs = [checkpoint.load_run(tmp_path, "mosaic"),
          checkpoint.load_run(tmp_path, "mosaic", scan_layers=False),
          checkpoint.load_run(tmp_path, "mosaic", scan_layers=False, mesh=sharding.make_mesh(
              {"data": 2, "fsdp": 4, "tensor": 1}))]
  assert "blocks" in runs[0].params and "block_1" in runs[1].params
  kernel = runs[2].params["block_1"]["context"]["out"]["kernel"]
  assert len(kernel.sharding.device_set) == 8
  logits = [jax.jit(run.model.apply)({"params": run.params}, tokens) for run in runs]
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)
  np.testing.assert_allclose(logits[2], logits[0], atol=1e-5)
  with pytest.raises(checkpoint.CheckpointError, match="scan_layers: True -> False"):
    trainer.train_and_evaluate(tiny(**{"train.num_steps": 6}), str(tmp_path), mode="train")


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
  full = {"train.num_steps": 1, "optimizer.eps": 1e-6, "data.batch_size": 16}
  one = trainer.train_and_evaluate(tiny(**full), str(tmp_path / "one"), mode="train")
  two = trainer.train_and_evaluate(tiny(**full, **{"optimizer.accumulation_steps": 2}),
                                   str(tmp_path / "two"), mode="train")
  assert one["mosaic"].step == two["mosaic"].step == 1
  a, b = final_params(tmp_path / "one" / "mosaic"), final_params(tmp_path / "two" / "mosaic")
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), a[1], b[1])
  la, lb = losses_by_step(tmp_path / "one" / "mosaic"), losses_by_step(tmp_path / "two" / "mosaic")
  assert abs(la[1] - lb[1]) < 1e-5


def test_checkpoints_kept(tmp_path):
  config = tiny(**{"train.num_steps": 20, "train.checkpoint_every": 2, "train.eval_every": 4,
                   "train.keep_checkpoints": 2})
  trainer.train_and_evaluate(config, str(tmp_path), mode="train")
  steps = checkpoint.Checkpoints(str(tmp_path / "mosaic" / "checkpoints")).steps()
  assert steps[-2:] == [18, 20] and len(steps) <= 3  # the last two, plus the best evaluated one
  assert all(s % 4 == 0 for s in steps[:-2])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 4, "train.checkpoint_every": 4}),
                             str(tmp_path), mode="train")
  explode = tiny(**{"train.num_steps": 12, "train.log_every": 1, "train.checkpoint_every": 100,
                    "optimizer.learning_rate": 1e30, "optimizer.grad_clip": 0.0})
  with pytest.raises(trainer.TrainingError, match="Non-finite loss.*step 4"):
    trainer.train_and_evaluate(explode, str(tmp_path), mode="train")
  step, params = final_params(tmp_path / "mosaic")
  assert step == 4 and all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))


def test_bad_inputs_fail_with_clear_messages(tmp_path):
  with pytest.raises(DataError, match="No file matches"):
    trainer.train_and_evaluate(tiny(**{"data.train_files": str(tmp_path / "nope.txt")}),
                               str(tmp_path / "a"))
  (tmp_path / "empty.txt").write_text("\n")
  with pytest.raises(DataError, match="contains no documents"):
    trainer.train_and_evaluate(tiny(**{"data.validation_files": str(tmp_path / "empty.txt")}),
                               str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="smaller than the tokenizer's 2048"):
    trainer.train_and_evaluate(tiny(**{"models.mosaic.vocab_size": 1000}), str(tmp_path / "c"))
  with pytest.raises(ConfigError, match="config.train.models"):
    trainer.train_and_evaluate(tiny(**{"train.models": "mosaik"}), str(tmp_path / "d"))
  with pytest.raises(ConfigError, match=r"optimizer_overrides names \['mosaik'\]"):
    trainer.train_and_evaluate(tiny(**{"optimizer_overrides.mosaik": {"learning_rate": 1.0}}),
                               str(tmp_path / "d"))
  with pytest.raises(ConfigError, match="sets \\['lr'\\], which config.optimizer does not"):
    trainer.train_and_evaluate(tiny(**{"optimizer_overrides.mosaic": {"lr": 1.0}}),
                               str(tmp_path / "d"))

  trainer.train_and_evaluate(tiny(**{"train.num_steps": 4}), str(tmp_path / "e"), mode="train")
  with pytest.raises(checkpoint.CheckpointError, match=r"different model \(num_layers: 2 -> 3"):
    trainer.train_and_evaluate(tiny(**{"models.mosaic.num_layers": 3}), str(tmp_path / "e"))


def test_corrupted_checkpoint_is_reported_and_left_alone(tmp_path):
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 8, "train.checkpoint_every": 4}),
                             str(tmp_path), mode="train")
  step_dir = tmp_path / "mosaic" / "checkpoints" / "8"
  damaged = sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and
                   p.stat().st_size > 100)
  for path in damaged:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # truncated writes
  before = {p: p.read_bytes() for p in step_dir.rglob("*") if p.is_file()}
  with pytest.raises(checkpoint.CheckpointError, match="step 8.*resume from step 4"):
    trainer.train_and_evaluate(tiny(**{"train.num_steps": 12}), str(tmp_path))
  assert {p: p.read_bytes() for p in step_dir.rglob("*") if p.is_file()} == before
  kept = checkpoint.Checkpoints(str(tmp_path / "mosaic" / "checkpoints"))
  assert kept.steps() == [4, 8]  # nothing deleted
  kept.close()
  with pytest.raises(checkpoint.CheckpointError, match=r"overwrite the later checkpoints \[8\]"):
    trainer.train_and_evaluate(tiny(**{"train.num_steps": 12, "train.restore_step": 4}),
                               str(tmp_path), mode="train")
  step_dir.rename(tmp_path / "damaged-step-8")  # what the message says to do
  results = trainer.train_and_evaluate(tiny(**{"train.num_steps": 12}), str(tmp_path),
                                       mode="train")
  assert results["mosaic"].step == 12


# ---------------------------------------------------------------------------------------------
# The command line, in subprocesses: exit codes (signals: tests/train/test_preemption.py).

CLI = [sys.executable, "-m", "mosaics_jax.main", "--config=experiments/configs/quickstart.py:tiny",
       "--config.train.models=mosaic", "--config.optimizer.decay_steps=40"]


def _env():
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


def _run(args, **kwargs):
  return subprocess.run(CLI + args, cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=300, **kwargs)


def test_cli_rejects_unknown_and_mistyped_fields(tmp_path):
  typo = _run([f"--workdir={tmp_path}", "--config.train.num_stepz=5"])
  assert typo.returncode != 0 and "num_stepz" in typo.stderr
  wrong_type = _run([f"--workdir={tmp_path}", "--config.train.num_steps=many"])
  assert wrong_type.returncode != 0 and "num_steps" in wrong_type.stderr
  missing = _run([f"--workdir={tmp_path}", "--config.data.train_files=/no/such/file.txt"])
  assert missing.returncode == 1 and "error: No file matches '/no/such/file.txt'" in missing.stderr


def test_eval_mode_and_profiler_window(tmp_path):
  trainer.train_and_evaluate(tiny(**{"train.num_steps": 6, "train.profile_steps": "2:4"}),
                             str(tmp_path), mode="train")
  assert list((tmp_path / "mosaic" / "profile").rglob("*.xplane.pb"))
  assert not (tmp_path / "report.md").exists()
  results = trainer.train_and_evaluate(tiny(**{"train.num_steps": 6}), str(tmp_path), mode="eval")
  assert results["mosaic"].step == 6 and np.isfinite(results["mosaic"].validation_loss)
  assert "| mosaic |" in (tmp_path / "report.md").read_text()
  with pytest.raises(ConfigError, match="START:STOP"):
    trainer.train_and_evaluate(tiny(**{"train.profile_steps": "5"}), str(tmp_path / "x"))


def test_cluster_environment_detection(monkeypatch):
  from mosaics_jax import main
  for name in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  assert not main._cluster_environment()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0")  # one host: nothing to coordinate
  assert not main._cluster_environment()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0,t1k-w-1")
  assert main._cluster_environment()
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert main._cluster_environment()


def test_a_restarted_run_loads_its_executables_from_the_workdir_cache(tmp_path):
  """train.compilation_cache_dir (default WORKDIR/compilation_cache): a resumed run finds the
  executables its first run compiled."""
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  previous = jax.config.jax_compilation_cache_dir
  hits = []
  listener = lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None
  jax.config.update("jax_compilation_cache_dir", None)  # as outside the tests: none set
  compilation_cache.reset_cache()
  jax.monitoring.register_event_listener(listener)
  try:
    trainer.train_and_evaluate(tiny(**{"train.num_steps": 2, "train.eval_every": 0}),
                               str(tmp_path), mode="train")
    cached = list((tmp_path / "compilation_cache").iterdir())
    assert cached and not hits
    trainer.train_and_evaluate(tiny(**{"train.num_steps": 4, "train.eval_every": 0}),
                               str(tmp_path), mode="train")
    assert hits  # the train step, and the rest, loaded instead of compiled
  finally:
    jax.monitoring.unregister_event_listener(listener)
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def test_accumulated_steps_weigh_every_target_token_equally():
  """Micro-batches with different numbers of targets (ignored separators, padding): the
  accumulated step is the whole batch's. Averaging micro-batch means (before) was not."""
  model = models.build_model(models.model_config(
      "mosaic_v1_gpt2_small", num_layers=1, embed_dim=16, num_heads=2, vocab_size=64,
      persistent_slots=8, context_length=16, persistent_dropout=0.0, residual_dropout=0.0))
  params = models.init_params(model, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 64)
  targets = np.array(tokens[:, 1:])
  targets[:2, 3:] = -1  # the first micro-batch keeps 3 targets a row, the second all 16
  batch = {"inputs": tokens[:, :-1], "targets": jnp.asarray(targets)}
  sgd = optax.sgd(1.0)
  state = trainer.TrainState(jnp.zeros((), jnp.int32), params, sgd.init(params))
  results = {}
  for accumulation in (1, 2):
    step = trainer.make_train_step(model, sgd, lambda _: 1.0, accumulation, seed=0)
    results[accumulation] = jax.jit(step)(state, batch)
  assert abs(float(results[1][1]["loss"]) - float(results[2][1]["loss"])) < 1e-5
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
                         results[1][0].params, results[2][0].params)


def test_a_runs_tokenizer_is_found_in_old_and_new_workdirs(tmp_path):
  """Workdirs from before the token stores keep the same model under two names: fine;
  two different tokenizers are ambiguous."""
  from mosaics_jax.data import corpus, tokenizer as tokenizers  # pylint: disable=import-outside-toplevel
  documents = corpus.read_documents("package:tinystories/validation.txt")
  first, second = (tokenizers.train_tokenizer(documents, size) for size in (330, 340))
  (tmp_path / "data").mkdir()
  first.save(tmp_path / "data" / "tokenizer-old.model")
  first.save(tmp_path / "data" / "tokenizer-new.model")
  assert checkpoint._tokenizer(storage.path(tmp_path)).hash == first.hash  # pylint: disable=protected-access
  second.save(tmp_path / "data" / "tokenizer-other.model")
  with pytest.raises(checkpoint.CheckpointError, match="Several tokenizers"):
    checkpoint._tokenizer(storage.path(tmp_path))  # pylint: disable=protected-access
