"""The experiment config schema: ``base_config()`` and the model sections.

Every ``experiments/configs/NAME.py`` starts from ``base_config()``, fills it in and returns it
locked, so a mistyped ``--config.x.y`` fails at once. Fields:

    seed                 everything random derives from it (init, data order, dropout, m)
    data.*               source, files, format, tokenizer, seq_len, batch_size, packing, ...
    models.NAME.*        one section per model to train: every field of MosaicConfig /
                         TransformerConfig, plus ``kind``; vocab_size 0 = the tokenizer's
    optimizer.*          AdamW recipe (optimizer.py)
    optimizer_overrides.NAME.*  fields of ``optimizer`` that differ for model NAME (each model
                         at its own tuned learning rate, say); empty by default
    train.*              steps, logging, evaluation, checkpoints, profiling
    mesh.*               data / fsdp / tensor sizes (-1: the remaining devices), pod (the
                         slice a layout is for)
    report.*             samples written after training
"""

from __future__ import annotations

import dataclasses

import ml_collections

from mosaics_jax import models


class ConfigError(ValueError):
  """A config that cannot run; the message names the field."""


def parse_arg(arg: str, allowed, experiment: str) -> dict:
  """A config argument 'n=1000,cpu,lr=2.5e-4' -> {'n': 1000, 'cpu': True, 'lr': 0.00025}; a key
  outside ``allowed`` fails with the list of known ones."""
  out = {}
  for item in filter(None, (part.strip() for part in arg.split(","))):
    key, _, value = item.partition("=")
    if not value:
      out[key] = True
    else:
      try:
        out[key] = int(value)
      except ValueError:
        try:
          out[key] = float(value)
        except ValueError:
          out[key] = value
  unknown = sorted(set(out) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown {experiment} arguments {unknown}; known: {', '.join(allowed)}.")
  return out


def model_section(preset: str, **overrides) -> ml_collections.ConfigDict:
  """A preset of ``mosaics_jax.models`` as an editable config section; ``vocab_size=0`` means
  the tokenizer's vocabulary (rounded up to a multiple of 64)."""
  follow_tokenizer = overrides.get("vocab_size") == 0
  if follow_tokenizer:
    del overrides["vocab_size"]
  config = models.model_config(preset, **overrides)
  fields = models.config_to_dict(config)
  if follow_tokenizer:
    fields["vocab_size"] = 0
  # An unset optional field (dtype, the kernels' implementation: None, automatic) becomes a
  # typed placeholder, so that --config.models.NAME.FIELD=VALUE can set it from the command line.
  types = {f.name: str(f.type) for f in dataclasses.fields(config)}
  for name, value in fields.items():
    if value is None and types[name] == "str | None":
      fields[name] = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict(fields)


def scaled_v2_memories(context: int) -> dict:
  """v2's memory sizes at the paper's ratios for any training context (at 4k: h = 256, m in
  [64, 256] in training, 64 at inference): h = context / 16, m in [h/4, h], h/4 at inference.
  Used for Memory Mosaic v2 and the long/short-attention transformer alike."""
  window = context // 16
  return dict(short_term_window=window, long_term_skip_train=(window // 4, window),
              long_term_skip_eval=window // 4)


def model_config(name: str, section, vocab_size: int) -> models.ModelConfig:
  """The model dataclass of ``config.models.NAME`` for a vocabulary of ``vocab_size``."""
  fields = section.to_dict()
  if not fields["vocab_size"]:
    fields["vocab_size"] = -(-vocab_size // 64) * 64  # a multiple of 64, like GPT-2's 50304
  elif fields["vocab_size"] < vocab_size:
    raise ConfigError(
        f"config.models.{name}.vocab_size={fields['vocab_size']} is smaller than the tokenizer's "
        f"{vocab_size} tokens: set it to 0 (follow the tokenizer) or >= {vocab_size}, or use a "
        "tokenizer with a smaller vocabulary.")
  try:
    return models.config_from_dict(fields)
  except (TypeError, ValueError) as error:
    raise ConfigError(f"config.models.{name}: {error}") from error


def optimizer_config(name: str, config) -> ml_collections.ConfigDict:
  """``config.optimizer`` with ``config.optimizer_overrides.NAME`` applied, for model NAME."""
  overrides = config.get("optimizer_overrides", {}).get(name)
  if not overrides:
    return config.optimizer
  unknown = sorted(set(overrides) - set(config.optimizer))
  if unknown:
    raise ConfigError(f"config.optimizer_overrides.{name} sets {unknown}, which config.optimizer "
                      f"does not have; choose from {sorted(config.optimizer)}.")
  merged = ml_collections.ConfigDict(config.optimizer.to_dict())
  merged.update(overrides.to_dict())
  return merged


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(
      source="text",
      train_files="",             # comma-separated globs; 'package:tinystories/train.txt'
      validation_files="",
      format="auto",              # auto | lines | blocks | jsonl | babistories | parquet
      text_field="text",          # jsonl / parquet column
      tokenizer=dict(model_file="", vocab_size=4096, model_type="unigram"),
      seq_len=512,
      batch_size=32,              # global, in sequences
      packing="random_windows",   # the official recipe | "documents" | "whole_documents"
      eval_batches=10,
      num_workers=0,              # grain worker processes for the training batches
  ))
  config.models = ml_collections.ConfigDict()
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=5e-3, min_learning_rate=1e-4, warmup_steps=2000, decay_steps=0,
      weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, grad_clip=1.0, accumulation_steps=1))
  config.optimizer_overrides = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict(dict(
      num_steps=80000,
      models="",                  # comma-separated subset of config.models to run ("": all)
      log_every=100,
      eval_every=2000,
      checkpoint_every=2000,
      keep_checkpoints=3,
      keep_best=True,             # also keep the checkpoint with the lowest validation loss
      restore_step=-1,            # -1: the latest checkpoint
      profile_steps="",           # "START:STOP": a profiler trace of those steps
      peak_flops=0.0,             # per device, for MFU where the device is not in the table
      evaluators="",              # ";"-separated evaluations after training (evaluate/__init__.py)
      wandb_project="",           # also log to Weights & Biases (.[wandb]; WANDB_MODE=offline)
      compilation_cache_dir="",   # "": WORKDIR/compilation_cache (unless JAX has one); "none"
  ))
  # pod: the slice a layout was made for (pod=SLICE in a config argument; "" for none), the
  # slice ``python -m mosaics_jax.compile`` compiles for.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, pod=""))
  config.report = ml_collections.ConfigDict(dict(
      prompts=["Once upon a time", "Tom and Lily went to the park.", "The little dog"],
      sample_tokens=48, temperature=0.8, top_k=40))
  return config
