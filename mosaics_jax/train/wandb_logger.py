"""Weights & Biases beside TensorBoard: ``--config.train.wandb_project=NAME`` (``.[wandb]``).

One W&B run per trained model, its id derived from the run directory, so a resumed (preempted)
run appends to the same W&B run instead of starting a new one. ``WANDB_MODE=offline`` writes
locally (``<run_dir>/wandb``) with no network; ``wandb sync`` uploads it later. Process 0 only,
like the other metric writers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from mosaics_jax import storage
from mosaics_jax.train.config import ConfigError


def require_wandb(project: str) -> None:
  """Fails before any work when a project is set but wandb is not installed."""
  if not project:
    return
  try:
    import wandb  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as error:
    raise ConfigError(
        f"train.wandb_project={project!r} needs the wandb package: pip install "
        "'mosaics_jax[wandb]' (or leave train.wandb_project empty).") from error


class WandbRun:
  """Scalars of one model's run, logged to W&B at the trainer's steps."""

  def __init__(self, project: str, run_dir, config: dict):
    import wandb  # pylint: disable=import-outside-toplevel
    run_dir = str(run_dir)
    # W&B writes through the local filesystem: a run in a bucket keeps its files in /tmp.
    local_dir = (tempfile.mkdtemp(prefix="mosaics_jax_wandb_") if storage.is_remote(run_dir)
                 else run_dir)
    os.makedirs(local_dir, exist_ok=True)
    run_id = hashlib.sha1(run_dir.encode()).hexdigest()[:16]
    self._run = wandb.init(project=project, id=run_id, name=os.path.basename(run_dir.rstrip("/")),
                           resume="allow", dir=local_dir, config=config,
                           reinit="finish_previous")

  def log(self, step: int, values: dict[str, float]) -> None:
    self._run.log(values, step=int(step))

  def histogram(self, step: int, tag: str, values) -> None:
    import wandb  # pylint: disable=import-outside-toplevel
    self._run.log({tag: wandb.Histogram(values)}, step=int(step))

  def close(self) -> None:
    self._run.finish()
