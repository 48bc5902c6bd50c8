"""Evaluations beyond the validation loss, one file each.

* ``story_prompts``: the 24 prompts of Eldan & Li continued by trained models, side by side.
* ``moons``: the three-moons networks: training, error against context, matrices (a runner).
* ``regbench``: accuracy and TVD against exact next-token distributions (an evaluator).
* ``depth_curves``: training and validation curves of a depth sweep (v1 Figures 7, 13).
* ``position_loss``: loss against position on out-of-distribution text (v1 Figure 8).
* ``attention_maps``: the last token's weights over positions; leaky coefficient vs peak width
  (v1 Figures 14-16).
* ``extrapolation``: loss at 1x-8x the training length, with and without v2's long-term memory.
* ``ruler``: RULER-style new-knowledge tasks at 1x-8x the training context (v2 Table 3).
* ``icl_classification``: many-shot classification accuracy against shots, semantic and
  anonymous labels (v2 Figures 3-5).

After training, the trainer runs what ``config.train.evaluators`` names, ``;``-separated:
``EVALUATORS`` read the experiment's own data (``evaluate(model, params, data, config) -> dict
of metrics``); ``COMMANDS`` are the evaluation command lines, each entry ``NAME --flag=value
...`` with that command's flags, run on the model just trained and its mesh, writing into
``WORKDIR/MODEL/evaluations/NAME`` (e.g. ``"extrapolation --text=package:tinystories/
validation.txt --multiples=1,2"``). Their numbers join the run's metrics and results.json.
"""

import importlib
import shlex

# name -> module with ``evaluate``; imported when used, so that ``python -m
# mosaics_jax.evaluate.NAME`` does not import its own module twice.
EVALUATORS = {"regbench": "mosaics_jax.evaluate.regbench"}
# Evaluations with a command line over ``--run=WORKDIR:MODEL`` (evaluate/command.py).
COMMANDS = ("position_loss", "extrapolation", "attention_maps", "ruler", "icl_classification",
            "story_prompts")


def evaluator(name: str):
  """The evaluator function registered as ``name``."""
  return importlib.import_module(EVALUATORS[name]).evaluate


def parse_evaluators(spec: str) -> list[tuple[str, list[str]]]:
  """(name, flags) of each entry of ``config.train.evaluators``, checked before any training:
  an unknown name or flag raises ValueError naming the fix."""
  from mosaics_jax.evaluate import command  # pylint: disable=import-outside-toplevel
  out = []
  for entry in (e.strip() for e in spec.split(";") if e.strip()):
    name, *args = shlex.split(entry)
    if name in EVALUATORS and args:
      raise ValueError(f"train.evaluators: {name} takes no flags (its settings are the data's).")
    if name in COMMANDS:
      module = importlib.import_module(f"mosaics_jax.evaluate.{name}")
      given = [a.split("=")[0] for a in args]
      if any(flag in given for flag in ("--run", "--output", "--mesh")):
        raise ValueError(f"train.evaluators: {entry!r}: --run, --mesh and --output are the "
                         "trained model's; leave them out.")
      try:
        command.parse(module, ["--run=WORKDIR:MODEL", *args])
      except Exception as error:  # absl raises several flag errors
        raise ValueError(f"train.evaluators: {entry!r}: {error}") from error
    elif name not in EVALUATORS:
      raise ValueError(f"train.evaluators names {name!r}; known: {sorted(EVALUATORS)} and "
                       f"{list(COMMANDS)}, separated by ';' (e.g. 'ruler --samples=4').")
    out.append((name, args))
  return out


def after_training(name: str, args: list[str], run_dir, mesh) -> dict[str, float]:
  """Run the evaluation command ``name`` with ``args`` on the model trained in ``run_dir``
  (its last checkpoint), on ``mesh``; writes into ``run_dir/evaluations/name``. Its numbers,
  flattened to ``name/key/...``."""
  from mosaics_jax.evaluate import command  # pylint: disable=import-outside-toplevel
  module = importlib.import_module(f"mosaics_jax.evaluate.{name}")
  shape = ",".join(str(size) for size in mesh.shape.values())
  results = command.run(module, [f"--run={run_dir.parent}:{run_dir.name}", f"--mesh={shape}",
                                 f"--output={run_dir / 'evaluations' / name}", *args])
  if isinstance(results, dict) and run_dir.name in results:
    results = {key: value for key, value in results.items()
               if key == run_dir.name or key.startswith(run_dir.name + " ")}
    if len(results) == 1:
      results = results[run_dir.name]
  return _numbers(results, name)


def _numbers(tree, prefix: str) -> dict[str, float]:
  """The numeric leaves of nested results, keyed by their path."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() for k, v in
            _numbers(value, f"{prefix}/{key}").items()}
  if isinstance(tree, (int, float)) and not isinstance(tree, bool):
    return {prefix: float(tree)}
  return {}
