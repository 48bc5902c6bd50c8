"""Checkpoints: orbax CheckpointManager with the training state and the data-iterator state.

* Saves are asynchronous (training continues while the arrays are written); a step directory
  appears only once complete, so a run killed mid-save resumes from the previous one.
* Keeps the last ``keep`` checkpoints and, with ``keep_best``, the one with the lowest
  validation loss.
* Restores onto any mesh: the target is a tree of ``jax.ShapeDtypeStruct`` with the new
  shardings.
* ``model_config.json`` beside the checkpoints records the model; resuming with a different
  model fails with a clear message instead of a shape error deep inside orbax.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from mosaics_jax import models, storage
from mosaics_jax.data.tokenizer import Tokenizer

policies = ocp.checkpoint_managers


class CheckpointError(ValueError):
  """A checkpoint that cannot be used; the message says which one and what to do."""


# Model fields that choose how to compute, not what: a run may resume with other values.
HOW_TO_COMPUTE = ("dtype", "retrieval_implementation", "persistent_implementation", "remat")


def check_model_config(run_dir, model_config: dict) -> None:
  """Record the model config of a run, or check it against the recorded one."""
  path = storage.path(run_dir) / "model_config.json"
  current = json.loads(json.dumps(model_config))  # tuples -> lists, as stored
  if path.exists():
    recorded = json.loads(path.read_text())
    changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k)
                     and k not in HOW_TO_COMPUTE)
    if changed:
      details = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed)
      raise CheckpointError(
          f"{run_dir} holds checkpoints of a different model ({details}). Use a new --workdir, "
          "or the original config to resume.")
    return
  if jax.process_index() == 0:
    storage.write_bytes(path, json.dumps(current, indent=2, sort_keys=True).encode())


class Checkpoints:
  def __init__(self, directory, *, keep: int = 3, keep_best: bool = False):
    self.directory = storage.path(directory)
    preserve = [policies.LatestN(n=keep)]
    if keep_best:
      preserve.append(policies.BestN(get_metric_fn=lambda m: -m["validation_loss"], n=1,
                                     keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(preserve),
        enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, metrics: dict | None = None) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)),
                      metrics=metrics, force=True)

  def restore(self, step: int, abstract_state, data_iterator):
    """The state at ``step`` laid out as ``abstract_state`` (ShapeDtypeStructs with shardings);
    ``data_iterator`` is moved to where it was."""
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          data=grain.checkpoint.CheckpointRestore(data_iterator)))
    except Exception as error:  # orbax/tensorstore raise many types for damaged files
      earlier = [s for s in self.steps() if s < step]
      hint = (f"move {self.directory / str(step)} aside to resume from step "
              f"{earlier[-1]}" if earlier else "start from scratch with a new --workdir")
      raise CheckpointError(f"Checkpoint step {step} in {self.directory} cannot be restored "
                            f"({type(error).__name__}: {error}). Nothing was deleted; {hint}.") \
          from error
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@dataclasses.dataclass
class Run:
  """A trained model read back from a workdir: for generation and evaluation."""

  model: Any
  params: Any
  tokenizer: Tokenizer | None
  step: int


def load_run(workdir, name: str, step: int | None = None) -> Run:
  """The model ``name`` of the experiment in ``workdir`` (local or a bucket): its config, the
  parameters of its latest (or ``step``) checkpoint, and the experiment's tokenizer."""
  workdir = storage.path(workdir)
  run_dir = workdir / name
  config_path = run_dir / "model_config.json"
  if not config_path.exists():
    found = sorted(p.parent.name for p in workdir.glob("*/model_config.json"))
    raise CheckpointError(f"No model {name!r} in {workdir} (models there: {found}).")
  model = models.build_model(models.config_from_dict(json.loads(config_path.read_text())))
  manager = Checkpoints(run_dir / "checkpoints")
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise CheckpointError(f"{run_dir} has no checkpoint yet.")
  state_dir = run_dir / "checkpoints" / str(step) / "state"
  try:
    state = ocp.StandardCheckpointer().restore(state_dir)
  except Exception as error:  # orbax raises many types for damaged files
    raise CheckpointError(f"Cannot read {state_dir}: {error}") from error
  return Run(model, state["params"], _tokenizer(workdir), step)


def load_run_flag(spec: str, reading: str = "") -> tuple[str, str, Run]:
  """(workdir, model name, run) of a command-line ``--run=WORKDIR:MODEL``; with ``reading``
  (what the run will read), a run without a tokenizer fails."""
  workdir, _, name = spec.rpartition(":")
  if not workdir or not name:
    raise ValueError(f"--run={spec!r}: use WORKDIR:MODEL, e.g. /tmp/quickstart:mosaic.")
  run = load_run(workdir, name)
  if reading and run.tokenizer is None:
    raise ValueError(f"{workdir} has no tokenizer to read {reading} with.")
  return workdir, name, run


def _tokenizer(workdir) -> Tokenizer | None:
  """The experiment's tokenizer: its given model file, else the one trained in workdir/data."""
  config_path = workdir / "config.json"
  if config_path.exists():
    given = json.loads(config_path.read_text()).get("data", {}).get("tokenizer", {}).get(
        "model_file")
    if given:
      return Tokenizer.load(given)
  trained = sorted(str(p) for p in (workdir / "data").glob("tokenizer-*.model"))
  if len(trained) > 1:
    raise CheckpointError(f"Several tokenizers in {workdir}/data: {trained}; keep one.")
  return Tokenizer.load(trained[0]) if trained else None
