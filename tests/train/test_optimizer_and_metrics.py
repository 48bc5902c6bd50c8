"""The official optimizer recipe, FLOP counts, progress lines, TensorBoard and W&B logs."""

import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mosaics_jax import models
from mosaics_jax.train import metrics, optimizer, wandb_logger
from mosaics_jax.train.config import ConfigError
from tests.train import logs


def official_cosine_lr(it, learning_rate, min_lr, lr_decay_iters, warmup_iters):
  """Library/utils.py get_cosine_lr, restated."""
  if it < warmup_iters:
    return learning_rate * it / warmup_iters
  if it > lr_decay_iters:
    return min_lr
  ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
  return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


CONFIG = ml_collections.ConfigDict(dict(
    learning_rate=5e-3, min_learning_rate=1e-4, warmup_steps=2000, decay_steps=80000,
    weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, grad_clip=1.0, accumulation_steps=1))


def test_schedule_is_the_official_one():
  schedule = optimizer.learning_rate(CONFIG, 80000)
  for step in [0, 1, 1000, 1999, 2000, 2001, 40000, 79999, 80000, 90000]:
    assert float(schedule(step)) == pytest.approx(
        official_cosine_lr(step, 5e-3, 1e-4, 80000, 2000), rel=1e-5, abs=1e-9)


def test_weight_decay_only_on_matrices_and_clipping():
  params = {"matrix": jnp.ones((2, 3)), "slots": jnp.ones((1, 2, 3, 4)), "scale": jnp.ones((3,))}
  tx = optimizer.make_optimizer(CONFIG, 80000)
  state = tx.init(params)
  for _ in range(2001):  # past warm-up, zero gradients: only weight decay moves parameters
    updates, state = tx.update(jax.tree_util.tree_map(jnp.zeros_like, params), state, params)
  moved = jax.tree_util.tree_map(lambda u: float(jnp.abs(u).max()), updates)
  assert moved["matrix"] > 0 and moved["slots"] > 0 and moved["scale"] == 0
  huge = {k: 1e6 * jnp.ones_like(v) for k, v in params.items()}
  clipped, _ = tx.update(huge, tx.init(params), params)
  assert all(np.all(np.isfinite(u)) for u in jax.tree_util.tree_leaves(clipped))


def test_flops_per_token_matches_the_textbook_formula_for_gpt2():
  config = models.model_config("gpt2_small")
  params = models.abstract_params(models.build_model(config))
  n = 12 * (12 * 768 * 768)  # blocks' matrices
  expected = 3 * (2 * (n + 50304 * 768) + 4 * 768 * 12 * (512 + 1) / 2)
  assert metrics.training_flops_per_token(params, config, 512) == pytest.approx(expected)
  # nanoGPT's estimate (6N + 12 L H Q T, full attention, untied N) is within a few percent.
  nano = 6 * models.count_params(params) + 12 * 12 * 768 * 512
  assert abs(metrics.training_flops_per_token(params, config, 512) / nano - 1) < 0.08


def test_flops_count_the_memories_visible_pairs():
  v1 = models.model_config("mosaic_v1_gpt2_small")
  assert metrics.pairs_per_layer(v1, 512) == pytest.approx(511 / 2)
  v2 = models.model_config("mosaic_v2_small")
  t = np.arange(4096)
  expected = np.minimum(t, 255).mean() + np.maximum(t - 160 + 1, 0).mean()
  assert metrics.pairs_per_layer(v2, 4096) == pytest.approx(expected)


def test_throughput_excludes_the_first_step_and_pauses(monkeypatch):
  clock = iter([10.0, 12.0, 20.0])
  monkeypatch.setattr(metrics.time, "time", lambda: next(clock))
  meter = metrics.Throughput(flops_per_token=6e6, peak_flops=1e12, num_steps=100)
  meter.count(1000)
  assert meter.update(1) == {}  # compile step
  meter.exclude(1.0)
  meter.count(1000)
  meter.count(1000)
  rates = meter.update(3)  # 2 steps in 2 s minus 1 s paused
  assert rates["tokens_per_second_per_device"] == pytest.approx(2000 / jax.device_count())
  line = metrics.progress_line(3, 100, {"loss": 2.5, "learning_rate": 1e-3, "grad_norm": 0.5,
                                        **rates})
  assert "step   3/100" in line and "loss 2.5000" in line and "MFU" in line and "ETA" in line
  assert metrics.device_peak_flops(override=123.0) == 123.0


def test_tensorboard_and_wandb_read_back_what_was_logged(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  config = ml_collections.ConfigDict({"train": {"num_steps": 7}, "seed": 3})
  writer = metrics.MetricWriter(tmp_path, config, wandb_project="mosaics-test")
  writer.write(3, {"train/loss": 2.5, "train/mfu": 0.25})
  writer.write(7, {"eval/loss": 1.75})
  writer.histogram(7, "params/norms", [0.5, 1.0, 4.0])
  writer.close()
  (events,) = tmp_path.glob("events.out.tfevents.*")
  assert logs.read_scalars(events) == [(3, "train/loss", 2.5), (3, "train/mfu", 0.25),
                                       (7, "eval/loss", 1.75)]
  assert logs.read_histograms(events) == [(7, "params/norms", 3.0)]
  assert '"num_steps": 7' in logs.read_texts(events)["config/text_summary"]
  rows = logs.wandb_history(tmp_path)  # one row a step: the histogram joins step 7's
  assert [{k: v for k, v in row.items() if not k.startswith(("_", "params/"))} |
           {"step": row["_step"]} for row in rows] == [
              {"train/loss": 2.5, "train/mfu": 0.25, "step": 3}, {"eval/loss": 1.75, "step": 7}]
  assert rows[1]["params/norms/_type"] == "histogram"
  assert sum(rows[1]["params/norms/values"]) == 3
  assert metrics.read_metrics(tmp_path)[1]["eval/loss"] == 1.75
  data = bytearray(events.read_bytes())
  data[-3] ^= 0xFF  # TensorBoard's reader drops a damaged record (the histogram), not the rest
  events.write_bytes(bytes(data))
  assert logs.read_histograms(events) == [] and len(logs.read_scalars(events)) == 3


def test_wandb_project_without_wandb_fails_before_any_work(monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  with pytest.raises(ConfigError, match=r"pip install 'mosaics_jax\[wandb\]'"):
    wandb_logger.require_wandb("my-project")
  wandb_logger.require_wandb("")  # no project: wandb is not needed
