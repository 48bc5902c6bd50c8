"""``train_and_evaluate(config, workdir)``: the whole training program, top to bottom.

    mesh -> data -> for each model in config.models:
        state born sharded -> restore -> loop(step, log, evaluate, checkpoint, preemption)
        -> final evaluation and samples
    -> report comparing the models (report.md, loss_curves.png)

A SIGTERM or SIGINT anywhere ends the run cleanly: during the steps with a checkpoint of the
next step, elsewhere by raising ``preemption.Preempted`` (train/preemption.py).

Each model runs in ``workdir/<name>`` (checkpoints, metrics.jsonl, TensorBoard events); the
tokenizer and token caches are shared in ``workdir/data``. Rerunning the same command resumes
from the latest checkpoint. The CLI is ``mosaics_jax.main``; notebooks and tests call this.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mosaics_jax import data as data_lib
from mosaics_jax import evaluate as evaluate_lib
from mosaics_jax import generate, losses, models, storage
from mosaics_jax.train import (checkpoint, metrics, optimizer as optimizer_lib, report, sharding,
                               wandb_logger)
from mosaics_jax.train.config import ConfigError, model_config, optimizer_config
from mosaics_jax.train.preemption import Preemption

MODES = ("train", "eval", "train_and_eval")


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is intact."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass
class RunResult:
  name: str
  model_config: Any
  parameters: int
  step: int
  validation_loss: float | None = None
  samples: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  preempted: bool = False
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # from the evaluators
  params: Any = None  # the final parameters (sharded device arrays), e.g. for generation


def log(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Steps (pure functions, jitted below).


def make_loss(model):
  """(params, batch, key) -> the training loss of one (micro-)batch, dropout and v2's m drawn
  from ``key``."""

  def loss_fn(params, batch, key):
    token_losses = model.apply({"params": params}, batch["inputs"], batch.get("segment_ids"),
                               deterministic=False, rngs={"dropout": key},
                               targets=batch["targets"])
    return losses.mean_loss(token_losses, batch["targets"])

  return loss_fn


def _target_count(batch) -> jax.Array:
  """Target tokens the loss averages over (targets < 0 are ignored), at least 1."""
  return jnp.maximum(jnp.sum(batch["targets"] >= 0).astype(jnp.float32), 1.0)


def make_train_step(model, optimizer, schedule, accumulation: int, seed: int):
  """(state, batch) -> (state, metrics). With ``accumulation`` micro-batches, each one's summed
  token loss is divided by the whole batch's target count, so that every target token weighs
  the same and the step is the whole batch's (micro-batches may hold different numbers of
  targets: ignored separators, padding). A step with a non-finite loss or gradient leaves the
  state unchanged."""
  loss_fn = make_loss(model)

  def step(state, batch):
    key = jax.random.fold_in(jax.random.key(seed), state.step)
    if accumulation == 1:
      loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
    else:
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape(accumulation, x.shape[0] // accumulation, *x.shape[1:]), batch)
      total_count = _target_count(batch)

      def share(params, micro_batch, micro_key):  # sum of its token losses / all targets
        return loss_fn(params, micro_batch, micro_key) * _target_count(micro_batch) / total_count

      def accumulate(carry, inputs):
        index, micro_batch = inputs
        loss, grads = jax.value_and_grad(share)(state.params, micro_batch,
                                                jax.random.fold_in(key, index))
        return jax.tree_util.tree_map(jnp.add, carry, (loss, grads)), None

      zeros = (jnp.zeros(()), jax.tree_util.tree_map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accumulation), micro))
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(state.step + 1, keep(params, state.params),
                           keep(opt_state, state.opt_state))
    return new_state, {"loss": loss, "grad_norm": grad_norm,
                       "learning_rate": schedule(state.step), "finite": finite}

  return step


def make_eval_step(model):
  """(params, batch) -> (summed token loss, token count)."""

  def step(params, batch):
    token_loss = model.apply({"params": params}, batch["inputs"], batch.get("segment_ids"),
                             targets=batch["targets"])
    keep = (batch["targets"] >= 0).astype(jnp.float32)
    return jnp.sum(token_loss * keep), jnp.sum(keep)

  return step


# ---------------------------------------------------------------------------------------------
# One model.


def evaluate(eval_step, params, batches, mesh, stop=lambda: False) -> float | None:
  """The mean loss per target token; None once ``stop()`` (a preemption) turns true."""
  total, count = 0.0, 0.0
  for batch in batches:
    if stop():
      return None
    loss_sum, tokens = eval_step(params, sharding.global_batch(batch, mesh))
    total, count = total + float(loss_sum), count + float(tokens)
  return total / max(count, 1.0)


def _check_finite(history: list[dict], run_dir: str, checkpoints: checkpoint.Checkpoints) -> None:
  for values in history:
    if not values["finite"]:
      last = checkpoints.latest_step()
      raise TrainingError(
          f"Non-finite loss or gradient at step {int(values['step'])} "
          f"(loss {float(values['loss'])}, gradient norm {float(values['grad_norm'])}). The "
          f"update was skipped and nothing was saved; the last good checkpoint in {run_dir} is "
          f"step {last}. Lower optimizer.learning_rate or raise warmup_steps, then rerun.")


def _profile_window(spec: str) -> tuple[int, int] | None:
  if not spec:
    return None
  try:
    start, stop = (int(x) for x in spec.split(":"))
  except ValueError:
    raise ConfigError(f"train.profile_steps={spec!r}: use 'START:STOP', e.g. '10:15'.") from None
  if not 0 <= start < stop:
    raise ConfigError(f"train.profile_steps={spec!r}: need 0 <= START < STOP.")
  return start, stop


@dataclasses.dataclass
class Program:
  """Everything compiled for one model on one mesh: the initialiser, the jitted steps, and the
  shapes and shardings of the state (parameters and optimizer state born sharded)."""

  model: Any
  model_config: Any
  init: Any  # rng -> TrainState
  abstract_state: Any
  state_shardings: Any
  param_shardings: Any
  train_step: Any  # (state, batch) -> (state, metrics); donates the state
  eval_step: Any  # (params, batch) -> (loss sum, token count)
  parameters: int
  flops_per_token: float


def build_program(name: str, section, config, vocab_size: int, mesh) -> Program:
  """Call under ``jax.set_mesh(mesh)`` and ``nn.logical_axis_rules(sharding.LOGICAL_RULES)``."""
  model_cfg = model_config(name, section, vocab_size)
  model = models.build_model(model_cfg)
  num_steps = config.train.num_steps
  optimizer_settings = optimizer_config(name, config)
  schedule = optimizer_lib.learning_rate(optimizer_settings, num_steps)
  optimizer = optimizer_lib.make_optimizer(optimizer_settings, num_steps)
  sharding.check_batch(config.data.batch_size, mesh, optimizer_settings.accumulation_steps)

  def init(rng):
    params = nn.unbox(model.init(rng, jnp.zeros((1, config.data.seq_len), jnp.int32))["params"])
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  # No concrete array is made here, so the program also builds for a mesh of devices this
  # host does not have (an ahead-of-time compile, ``mosaics_jax.compile``).
  abstract = jax.eval_shape(lambda: init(jax.random.key(config.seed)))
  param_shardings = sharding.logical_to_shardings(models.logical_axes(model), abstract.params,
                                                  mesh)
  state_shardings = sharding.state_shardings(abstract, param_shardings, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(
      make_train_step(model, optimizer, schedule, optimizer_settings.accumulation_steps,
                      config.seed),
      in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, None),
      donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(param_shardings, batch_sharding))
  return Program(model, model_cfg, init, abstract, state_shardings, param_shardings, train_step,
                 eval_step, models.count_params(abstract.params),
                 metrics.training_flops_per_token(abstract.params, model_cfg, config.data.seq_len))


def train_model(name: str, section, config, data: data_lib.Data, mesh, run_dir,
                mode: str, preemption: Preemption, evaluators=()) -> RunResult:
  """Train and/or evaluate one model of the experiment in ``run_dir`` (an ``epath.Path``);
  ``evaluators``: the parsed ``config.train.evaluators``, of which the in-process ones run
  here."""
  program = build_program(name, section, config, data.vocab_size, mesh)
  checkpoint.check_model_config(run_dir, models.config_to_dict(program.model_config))
  checkpoints = checkpoint.Checkpoints(run_dir / "checkpoints",
                                       keep=config.train.keep_checkpoints,
                                       keep_best=config.train.keep_best)
  step = (checkpoints.latest_step() if config.train.restore_step < 0
          else config.train.restore_step)
  if step is not None:
    if step not in checkpoints.steps():
      raise checkpoint.CheckpointError(f"No checkpoint at step {step} in {checkpoints.directory}; "
                                       f"available: {checkpoints.steps()}.")
    later = [s for s in checkpoints.steps() if s > step]
    if later and mode != "eval":
      raise checkpoint.CheckpointError(
          f"Training from step {step} would overwrite the later checkpoints {later} in "
          f"{checkpoints.directory}; move them aside first (nothing is ever deleted).")
    state, position = checkpoints.restore(
        step, sharding.placed(program.abstract_state, program.state_shardings))
    if position["data_fingerprint"] and data.fingerprint and (
        position["data_fingerprint"] != data.fingerprint):
      raise checkpoint.CheckpointError(
          f"{checkpoints.directory} step {step} was trained on other data (fingerprint "
          f"{position['data_fingerprint']}, now {data.fingerprint}: another corpus, store or "
          "tokenizer). Resume with the original data, or train into a new --workdir.")
    next_batch = position["next_batch"]
    log(f"[{name}] resumed from step {step} ({checkpoints.directory})")
  else:
    state = jax.jit(program.init, out_shardings=program.state_shardings)(
        jax.random.key(config.seed))
    next_batch = 0
  log(f"[{name}] {type(program.model).__name__}: {program.parameters:,} parameters, "
      f"{program.flops_per_token / 1e6:,.1f} MFLOP per trained token, mesh {dict(mesh.shape)}")

  result = RunResult(name, program.model_config, program.parameters, int(step or 0))
  with preemption.deferred():  # a save in flight always finishes
    if mode in ("train", "train_and_eval") and result.step < config.train.num_steps:
      state, result.step, result.preempted = _train_loop(
          name, config, program, state, result.step, next_batch, data, mesh, checkpoints,
          run_dir, preemption)
    checkpoints.close()
  if preemption.received and not result.preempted:  # during the last save: it is complete
    result.preempted = True
    log(f"[{name}] stopped after the checkpoint of step {result.step}; rerun the same command "
        "to evaluate.")
  result.params = state.params
  if result.preempted or mode == "train":
    return result

  result.validation_loss = evaluate(program.eval_step, state.params, data.evaluation, mesh)
  log(f"[{name}] validation loss {result.validation_loss:.4f} at step {result.step}")
  for evaluator, _ in evaluators:
    if evaluator in evaluate_lib.EVALUATORS:  # the commands run after, from the checkpoint
      found = evaluate_lib.evaluator(evaluator)(program.model, state.params, data, config)
      result.metrics.update(found)
      log(f"[{name}] {evaluator}: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
  if data.tokenizer is not None and config.report.prompts:
    prompts = [[data.tokenizer.eot_id] + ids for ids in data.tokenizer.encode(config.report.prompts)]
    continuations = generate.sample(
        program.model, state.params, prompts, max_new_tokens=config.report.sample_tokens,
        rng=jax.random.key(config.seed), temperature=config.report.temperature,
        top_k=config.report.top_k)
    result.samples = [(prompt, data.tokenizer.decode(ids))
                      for prompt, ids in zip(config.report.prompts, continuations)]
  return result


@jax.jit
def _parameter_norms(params) -> jax.Array:
  """The L2 norm of every parameter array (one number each), for a histogram at evaluations."""
  return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
                    for leaf in jax.tree.leaves(params)])


def _train_loop(name, config, program, state, step, next_batch, data, mesh, checkpoints,
                run_dir, preemption):
  """Steps from ``step`` (reading global batches from ``next_batch`` on) until num_steps or
  preemption; returns (state, step, preempted)."""
  train_iter = data.train_iterator(next_batch)
  cfg_train, num_steps = config.train, config.train.num_steps
  writer = metrics.MetricWriter(run_dir, config, cfg_train.wandb_project)
  throughput = metrics.Throughput(program.flops_per_token,
                                  metrics.device_peak_flops(override=cfg_train.peak_flops),
                                  num_steps)
  profile = _profile_window(cfg_train.profile_steps)
  # The profiler writes through the local filesystem: a run in a bucket traces to local disk.
  profile_dir = (os.path.join("/tmp/mosaics_jax_profile", name) if storage.is_remote(run_dir)
                 else str(run_dir / "profile"))
  first_step, pending, started = step, [], time.time()
  preempted = False
  while step < num_steps:
    if profile and step == profile[0]:
      jax.profiler.start_trace(profile_dir)
    local_batch = next(train_iter)
    next_batch += 1
    throughput.count(local_batch["inputs"].size * jax.process_count())
    batch = sharding.global_batch(local_batch, mesh)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, step_metrics = program.train_step(state, batch)
    step += 1
    pending.append(dict(step_metrics, step=step))
    # Dispatch at most one step beyond the one running, so that a signal (whose Python handler
    # waits for this wait to return) is seen within a step (train/preemption.py).
    if len(pending) > 1:
      jax.block_until_ready(pending[-2]["loss"])
    if profile and step == profile[1]:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      log(f"[{name}] profiler trace of steps {profile[0]}-{profile[1]} in {profile_dir}")

    if step % cfg_train.log_every == 0 or step == num_steps or step == first_step + 1:
      history, pending = jax.device_get(pending), []
      _check_finite(history, run_dir, checkpoints)
      values = {"loss": float(np.mean([h["loss"] for h in history])),
                "learning_rate": float(history[-1]["learning_rate"]),
                "grad_norm": float(history[-1]["grad_norm"])}
      values.update(throughput.update(step))
      writer.write(step, {f"train/{k}": v for k, v in values.items() if k != "eta_seconds"})
      suffix = (f" (first step, compiled in {time.time() - started:.1f}s)"
                if step == first_step + 1 else "")
      log(f"[{name}] " + metrics.progress_line(step, num_steps, values) + suffix)

    validation, stop = None, preemption.requested(step)
    save = stop or step == num_steps or (cfg_train.checkpoint_every and
                                         step % cfg_train.checkpoint_every == 0)
    evaluate_now = cfg_train.eval_every and step % cfg_train.eval_every == 0
    if evaluate_now or save:
      jax.block_until_ready(state)  # so that the pause below excludes no training time
      paused = time.time()
      if evaluate_now:
        validation = evaluate(program.eval_step, state.params, data.evaluation, mesh,
                              stop=lambda: preemption.received)
        if validation is not None:
          writer.write(step, {"eval/loss": validation})
          writer.histogram(step, "params/norms", jax.device_get(_parameter_norms(state.params)))
          log(f"[{name}] step {step}: validation loss {validation:.4f}")
      if save or preemption.received:  # a signal during the evaluation saves now
        _check_finite(jax.device_get(pending), run_dir, checkpoints)  # never save after a NaN
        checkpoints.save(step, state, next_batch, data.fingerprint,
                         metrics=None if validation is None else {"validation_loss": validation})
        stop = stop or preemption.received  # a signal during the save: it completes, then stop
      throughput.exclude(time.time() - paused)
    if stop:
      preempted = True
      break
  checkpoints.wait()
  writer.close()
  if preempted:
    log(f"[{name}] stopped at step {step} with a checkpoint; rerun the same command to resume.")
  return state, step, preempted


# ---------------------------------------------------------------------------------------------
# The experiment.


def use_compilation_cache(directory: str, workdir) -> None:
  """JAX's persistent compilation cache, so that a run restarted after a preemption or a crash
  loads its executables instead of compiling them again: ``directory`` (a local path or a
  bucket); by default ``WORKDIR/compilation_cache``, unless JAX already has a cache
  (``JAX_COMPILATION_CACHE_DIR``, or set by the caller); "none" leaves JAX's setting alone."""
  if directory == "none":
    return
  if directory or not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir",
                      directory or str(storage.path(workdir) / "compilation_cache"))


def train_and_evaluate(config, workdir, mode: str = "train_and_eval") -> dict[str, RunResult]:
  """Train and/or evaluate every model of ``config.models`` in ``workdir/<name>``; ``workdir``
  is a local directory or a bucket (``gs://...``)."""
  if mode not in MODES:
    raise ConfigError(f"mode={mode!r}: choose one of {MODES}.")
  names = [n.strip() for n in config.train.models.split(",") if n.strip()] or list(config.models)
  unknown = [n for n in names if n not in config.models]
  if not config.models or unknown:
    raise ConfigError(f"config.train.models names {unknown or 'nothing'}; config.models has "
                      f"{list(config.models)}.")
  stray = [n for n in config.get("optimizer_overrides", {}) if n not in config.models]
  if stray:
    raise ConfigError(f"config.optimizer_overrides names {stray}, not models of config.models "
                      f"({list(config.models)}): rename or remove them.")
  for name in names:
    optimizer_config(name, config)  # unknown fields fail before any data is built
  try:
    evaluators = evaluate_lib.parse_evaluators(config.train.evaluators)
  except ValueError as error:
    raise ConfigError(str(error)) from error
  wandb_logger.require_wandb(config.train.wandb_project)
  workdir = storage.path(workdir)
  if jax.process_index() == 0:
    storage.write_bytes(workdir / "config.json",
                        config.to_json_best_effort(indent=2, sort_keys=True).encode())

  use_compilation_cache(config.train.compilation_cache_dir, workdir)
  mesh = sharding.make_mesh(config.mesh)
  with Preemption(log) as preemption:  # outside the steps a signal raises Preempted
    data = data_lib.build(config.data, seed=config.seed, workdir=workdir,
                          process_index=jax.process_index(), process_count=jax.process_count())
    log(f"data: {data.description}")
    results = {}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
      for name in names:
        results[name] = train_model(name, config.models[name], config, data, mesh,
                                    workdir / name, mode, preemption, evaluators)
        if results[name].preempted:
          return results
    if mode != "train":  # evaluation commands: each restores its model onto the mesh itself
      for evaluator, args in evaluators:
        if evaluator in evaluate_lib.COMMANDS:
          for name in names:
            found = evaluate_lib.after_training(evaluator, args, workdir / name, mesh)
            results[name].metrics.update(found)
            log(f"[{name}] {evaluator}: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
    if mode != "train" and jax.process_index() == 0:
      report.write(workdir, results, data.description)
  return results
