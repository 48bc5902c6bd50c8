"""Metrics you can check: FLOP counts, MFU, the progress line, metrics.jsonl and TensorBoard.

FLOPs per trained token (``training_flops_per_token``), the convention of PaLM appendix B /
nanoGPT with causal masks counted exactly:

    3 x forward, forward = 2 N_matmul + 4 d sum_layers avg_pairs

* N_matmul: parameters that multiply activations, i.e. every array of 2+ dimensions except
  the embedding table (a lookup) and learned positions, plus the output head (vocab x d) even
  when it is tied. Persistent-memory slots count (q . K and p . V are matmuls with them).
* 4 d avg_pairs per layer and memory/attention: scores (2 d per pair) and the weighted sum of
  values (2 d per pair), with avg_pairs the mean number of pairs a query reads over the
  sequence: (T-1)/2 for strictly causal memories, (T+1)/2 for causal attention, min(t, h-1)
  averaged for v2's short-term memory, max(t-m+1, 0) averaged for the long-term memory (m at
  the middle of its training range). Masked-out pairs are not counted, even where a kernel
  computes them.
* Key recurrences, norms, softmaxes and the loss are not counted (a few percent at most).

MFU = FLOPs/s per device / the device's peak dense bf16 FLOP/s (``hardware.CHIPS``; set
``train.peak_flops`` for devices not in the table, e.g. CPUs).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from mosaics_jax import hardware, storage
from mosaics_jax.models import MosaicConfig, TransformerConfig, stack
from mosaics_jax.train import wandb_logger
from mosaics_jax.train.tensorboard import EventWriter


def device_peak_flops(device: jax.Device | None = None, override: float = 0.0) -> float | None:
  """Peak dense bf16 FLOP/s of a device (``hardware.CHIPS``), ``override`` if set, else None."""
  if override:
    return override
  found = hardware.chip_of_kind((device or jax.devices()[0]).device_kind)
  return None if found is None else found.peak_flops


def matmul_params(params, config) -> int:
  """N_matmul of the module docstring."""
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [getattr(p, "key", "") for p in path]
    per_layer = leaf.ndim - (names[0] == stack.SCANNED)  # a scanned stack's leading axis
    if per_layer < 2 or "token_embed" in names or "position_embed" in names:
      continue
    total += int(np.prod(leaf.shape))
  if config.tie_embeddings:
    total += config.vocab_size * config.embed_dim
  return total


def _mean_pairs(seq_len: int, skip: int, window: int | None) -> float:
  t = np.arange(seq_len)
  reach = t if window is None else np.minimum(t, window - 1)
  return float(np.mean(np.maximum(reach - skip + 1, 0)))


def pairs_per_layer(config, seq_len: int) -> float:
  """Sum over the memories / attentions of one layer of the mean pairs a query reads."""
  if isinstance(config, MosaicConfig):
    if config.version == 1:
      return _mean_pairs(seq_len, 1, None)
    total = 0.0
    if config.short_term_memory:
      total += _mean_pairs(seq_len, 1, config.short_term_window)
    if config.long_term_memory:
      total += _mean_pairs(seq_len, sum(config.long_term_skip_train) // 2, None)
    return total
  if isinstance(config, TransformerConfig) and config.long_short_attention:
    return (_mean_pairs(seq_len, 0, config.short_term_window) +
            _mean_pairs(seq_len, sum(config.long_term_skip_train) // 2, None))
  return _mean_pairs(seq_len, 0, None)


def training_flops_per_token(params, config, seq_len: int) -> float:
  forward = (2 * matmul_params(params, config) +
             4 * config.embed_dim * config.num_layers * pairs_per_layer(config, seq_len))
  return 3.0 * forward


class MetricWriter:
  """metrics.jsonl and TensorBoard events in ``logdir`` (local or a bucket), and W&B where a
  project is given (train/wandb_logger.py); process 0 only. ``config`` (a ConfigDict) is
  written once as TensorBoard text and as the W&B run's config."""

  def __init__(self, logdir, config=None, wandb_project: str = ""):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self._jsonl = storage.GrowingFile(storage.path(logdir) / "metrics.jsonl")
      self._events = EventWriter(logdir)
      if config is not None:
        self._events.text("config", "```\n" + config.to_json_best_effort(
            indent=2, sort_keys=True) + "\n```")
      self._wandb = (wandb_logger.WandbRun(wandb_project, logdir, config.to_dict())
                     if wandb_project else None)

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    line = json.dumps({"step": int(step), "time": time.time(), **values}) + "\n"
    self._jsonl.write(line.encode())
    self._events.scalars(int(step), values)
    if self._wandb is not None:
      self._wandb.log(step, values)

  def histogram(self, step: int, tag: str, values) -> None:
    """A distribution (TensorBoard's Histograms tab; not in metrics.jsonl)."""
    if not self.enabled:
      return
    self._events.histogram(int(step), tag, values)
    if self._wandb is not None:
      self._wandb.histogram(step, tag, values)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._events.close()
      if self._wandb is not None:
        self._wandb.close()


def read_metrics(logdir) -> list[dict]:
  path = storage.path(logdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s"


class Throughput:
  """Tokens/s/device and MFU between log points, excluding the first (compiling) step."""

  def __init__(self, flops_per_token: float, peak_flops: float | None, num_steps: int):
    self.flops_per_token = flops_per_token
    self.peak_flops = peak_flops
    self.num_steps = num_steps
    self.devices = jax.device_count()
    self._mark = None  # (time, step) after the first step finished
    self._excluded = 0.0
    self._tokens = 0  # (padded) tokens of the steps since the last update

  def count(self, tokens: int) -> None:
    """Tokens of a step about to run (batches may vary in length)."""
    self._tokens += tokens

  def exclude(self, seconds: float) -> None:
    """Time spent outside training steps (evaluation, checkpoint saves) since the last update."""
    self._excluded += seconds

  def update(self, step: int) -> dict[str, float]:
    """Call after the step's results are on the host; returns rates since the last call."""
    now = time.time()
    counted, self._tokens = self._tokens, 0
    if self._mark is None:
      self._mark, self._excluded = (now, step), 0.0
      return {}
    elapsed, steps = now - self._mark[0] - self._excluded, step - self._mark[1]
    self._mark, self._excluded = (now, step), 0.0
    if steps <= 0 or elapsed <= 0:
      return {}
    tokens = counted / elapsed / self.devices
    rates = {"tokens_per_second_per_device": tokens,
             "tflops_per_device": tokens * self.flops_per_token / 1e12,
             "eta_seconds": (self.num_steps - step) * elapsed / steps}
    if self.peak_flops:
      rates["mfu"] = tokens * self.flops_per_token / self.peak_flops
    return rates


def progress_line(step: int, num_steps: int, values: dict[str, float]) -> str:
  parts = [f"step {step:>{len(str(num_steps))}d}/{num_steps}"]
  if "loss" in values:
    parts.append(f"loss {values['loss']:.4f}")
  if "learning_rate" in values:
    parts.append(f"lr {values['learning_rate']:.2e}")
  if "grad_norm" in values:
    parts.append(f"grad {values['grad_norm']:.3f}")
  if "tokens_per_second_per_device" in values:
    parts.append(f"{values['tokens_per_second_per_device']:,.0f} tok/s/dev")
    parts.append(f"{values['tflops_per_device']:.3f} TFLOP/s/dev")
    parts.append(f"MFU {100 * values['mfu']:.1f}%" if "mfu" in values else "MFU n/a")
    parts.append(f"ETA {format_duration(values['eta_seconds'])}")
  return " | ".join(parts)
