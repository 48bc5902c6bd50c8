"""Checkpoints: orbax CheckpointManager with the training state and the data position.

* Saves are asynchronous (training continues while the arrays are written); a step directory
  appears only once complete, so a run killed mid-save resumes from the previous one.
* Keeps the last ``keep`` checkpoints and, with ``keep_best``, the one with the lowest
  validation loss.
* Restores onto any mesh: the target is a tree of ``jax.ShapeDtypeStruct`` with the new
  shardings.
* The data position is the next global batch and the data's fingerprint (a small JSON item,
  the same from every host): batches are a pure function of their index, so a run resumes
  on any number of hosts and grain workers, and a resume on other data is refused.
* ``model_config.json`` beside the checkpoints records the model; resuming with a different
  model fails with a clear message instead of a shape error deep inside orbax.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import orbax.checkpoint as ocp

from mosaics_jax import models, storage
from mosaics_jax.models import stack
from mosaics_jax.data import store, tokenizer as tokenizers
from mosaics_jax.train import sharding

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
    # A field added since the run was recorded reads as its default (e.g. scan_layers).
    recorded = json.loads(json.dumps(models.config_to_dict(models.config_from_dict(
        json.loads(path.read_text())))))
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
                       "data_position": ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, next_batch: int, data_fingerprint: str = "",
           metrics: dict | None = None) -> None:
    position = {"next_batch": int(next_batch), "data_fingerprint": data_fingerprint}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_position=ocp.args.JsonSave(position)),
                      metrics=metrics, force=True)

  def restore(self, step: int, abstract_state) -> tuple[Any, dict]:
    """(the state at ``step`` laid out as ``abstract_state``, ShapeDtypeStructs with
    shardings; the data position ``{"next_batch", "data_fingerprint"}``)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    # Checkpoints written before the data position was recorded (grain iterator files, one
    # per host) are at batch ``step``: one batch a step from batch 0.
    has_position = (self.directory / str(step) / "data_position").exists()
    if has_position:
      items["data_position"] = ocp.args.JsonRestore()
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:  # orbax/tensorstore raise many types for damaged files
      earlier = [s for s in self.steps() if s < step]
      hint = (f"move {self.directory / str(step)} aside to resume from step "
              f"{earlier[-1]}" if earlier else "start from scratch with a new --workdir")
      raise CheckpointError(f"Checkpoint step {step} in {self.directory} cannot be restored "
                            f"({type(error).__name__}: {error}). Nothing was deleted; {hint}.") \
          from error
    position = (dict(restored["data_position"]) if has_position else
                {"next_batch": step, "data_fingerprint": ""})
    return restored["state"], position

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
  tokenizer: Any  # a data/tokenizer.py tokenizer, or None
  step: int


def load_run(workdir, name: str, step: int | None = None, mesh=None,
             scan_layers: bool | None = None) -> Run:
  """The model ``name`` of the experiment in ``workdir`` (local or a bucket): its config, the
  parameters of its latest (or ``step``) checkpoint, and the experiment's tokenizer.

  Only the parameters are read (the optimizer's moments, twice their size, stay on disk),
  straight into their place: sharded over ``mesh`` by the training rules
  (``train/sharding.py``; any mesh, not only the one trained on), else on the default device.
  ``scan_layers``: the layout of the returned model (``models/stack.py``), converted from the
  run's own if it differs; None keeps the run's.
  """
  workdir = storage.path(workdir)
  run_dir = workdir / name
  config_path = run_dir / "model_config.json"
  if not config_path.exists():
    found = sorted(p.parent.name for p in workdir.glob("*/model_config.json"))
    raise CheckpointError(f"No model {name!r} in {workdir} (models there: {found}).")
  saved = models.config_from_dict(json.loads(config_path.read_text()))
  model = models.build_model(saved)
  manager = Checkpoints(run_dir / "checkpoints")
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise CheckpointError(f"{run_dir} has no checkpoint yet.")
  state_dir = run_dir / "checkpoints" / str(step) / "state"
  target = {"params": _placed_params(model, mesh)}
  try:
    restored = ocp.PyTreeCheckpointer().restore(state_dir, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  except Exception as error:  # orbax raises many types for damaged files
    raise CheckpointError(f"Cannot read the parameters in {state_dir}: {error}") from error
  params = restored["params"]
  if scan_layers is not None and scan_layers != saved.scan_layers:
    model = models.build_model(dataclasses.replace(saved, scan_layers=scan_layers))
    placed = _placed_params(model, mesh)
    to_layout = functools.partial(stack.to_layout, scanned=scan_layers)
    params = jax.jit(to_layout, out_shardings=jax.tree_util.tree_map(lambda leaf: leaf.sharding,
                                                                     placed))(params)
  return Run(model, params, _tokenizer(workdir), step)


def _placed_params(model, mesh):
  """The parameters' shapes, each with its sharding: over ``mesh`` by the training rules,
  else on the default device."""
  abstract = models.abstract_params(model)
  if mesh is None:
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree_util.tree_map(lambda _: one, abstract)
  else:
    shardings = sharding.logical_to_shardings(models.logical_axes(model), abstract, mesh)
  return sharding.placed(abstract, shardings)


def load_run_flag(spec: str, reading: str = "", mesh=None) -> tuple[str, str, Run]:
  """(workdir, model name, run) of a command-line ``--run=WORKDIR:MODEL``, its parameters on
  ``mesh`` as in ``load_run``; with ``reading`` (what the run will read), a run without a
  tokenizer fails."""
  workdir, _, name = spec.rpartition(":")
  if not workdir or not name or "/" in name:  # "/" in name: gs://bucket/run without :MODEL
    raise ValueError(f"--run={spec!r}: use WORKDIR:MODEL, e.g. /tmp/quickstart:mosaic.")
  run = load_run(workdir, name, mesh=mesh)
  if reading and run.tokenizer is None:
    raise ValueError(f"{workdir} has no tokenizer to read {reading} with.")
  return workdir, name, run


def _tokenizer(workdir):
  """The experiment's tokenizer: its given model file, else the one saved with its token
  store (``prepare --tokenizer=sentencepiece:VOCAB``), else the one trained in workdir/data."""
  config_path = workdir / "config.json"
  if config_path.exists():
    data_config = json.loads(config_path.read_text()).get("data", {})
    given = data_config.get("tokenizer", {}).get("model_file")
    if given:
      return tokenizers.load(given)
    train_files = str(data_config.get("train_files", ""))
    if train_files and store.is_store(train_files):
      saved = store.saved_tokenizer(train_files)
      if saved is not None:
        return saved
  trained = sorted(str(p) for p in (workdir / "data").glob("tokenizer-*.model"))
  # A workdir from before the token stores holds the same model under its old name too.
  if len({storage.path(p).read_bytes() for p in trained}) > 1:
    raise CheckpointError(f"Several tokenizers in {workdir}/data: {trained}; keep one.")
  return tokenizers.Tokenizer.load(trained[0]) if trained else None
