"""What the evaluation command lines share, defined once: their common flags, the trained runs
they read (restored onto a mesh with ``--mesh``), and their outputs, written through
``mosaics_jax.storage`` (a local directory or a bucket).

An evaluation module ``NAME`` has ``define_flags(values)`` and ``run(values) -> results``;
``python -m mosaics_jax.evaluate.NAME`` is ``command.main(NAME)``. A test or a notebook runs
the very same code with flags of its own, without a subprocess:
``command.run(position_loss, ["--run=/tmp/q:mosaic", "--text=...", "--output=gs://b/ood"])``.
"""

from __future__ import annotations

import json
import sys
import types

from absl import app, flags

from mosaics_jax import storage


def define_common(values: flags.FlagValues, *, output: str, text: bool = False,
                  multiples: str | None = None, windows: int | None = None,
                  run_help: str = "WORKDIR:MODEL, once per model.") -> None:
  """--run, --mesh and --output, and where the evaluation reads held-out text, --text and
  --format; --multiples and --windows where given a default."""
  flags.DEFINE_multi_string("run", None, run_help, flag_values=values)
  flags.DEFINE_list("mesh", [], "DATA,FSDP,TENSOR: restore the parameters sharded over a mesh "
                    "of that shape (the training rules) and split the batches over it; "
                    "empty: one device.", flag_values=values)
  flags.DEFINE_string("output", output, "Directory (local or a bucket) for the results.",
                      flag_values=values)
  required = ["run"]
  if text:
    flags.DEFINE_string("text", None, "Held-out text file(s) or glob, local or in a bucket.",
                        flag_values=values)
    flags.DEFINE_string("format", "auto", "text, jsonl, babistories, parquet or auto.",
                        flag_values=values)
    required.append("text")
  if multiples is not None:
    flags.DEFINE_list("multiples", multiples.split(","),
                      "Evaluation lengths, in training contexts.", flag_values=values)
  if windows is not None:
    flags.DEFINE_integer("windows", windows, "At most this many windows per length.",
                         flag_values=values)
  flags.mark_flags_as_required(required, flag_values=values)


def parse(module: types.ModuleType, args: list[str]) -> flags.FlagValues:
  """``module``'s flags parsed from ``args`` (no program name), in a FlagValues of their own."""
  values = flags.FlagValues()
  module.define_flags(values)
  values([module.__name__, *args])
  return values


def run(module: types.ModuleType, args: list[str]):
  """Run evaluation ``module`` as its command line would with ``args``; its results."""
  return module.run(parse(module, args))


def main(module: types.ModuleType) -> None:
  """The command line of ``module``: its flags on absl's global FlagValues, then ``run``."""
  module.define_flags(flags.FLAGS)
  for flag in flags.FLAGS.get_key_flags_for_module(__name__):  # the common ones, in --help
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def entry(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    from mosaics_jax import cli  # pylint: disable=import-outside-toplevel
    cli.quiet_logging()
    module.run(flags.FLAGS)

  app.run(entry)


def multiples(values) -> list[int]:
  try:
    return sorted(int(k) for k in values.multiples)
  except ValueError as error:
    raise app.UsageError(f"--multiples takes integers, e.g. 1,2,4: {error}") from error


def mesh(values):
  """The mesh of ``--mesh=DATA,FSDP,TENSOR``, or None for one device."""
  from mosaics_jax import cli  # pylint: disable=import-outside-toplevel
  return cli.mesh(values.mesh)


def load_runs(values, reading: str = "", on=None) -> list[tuple[str, str, object]]:
  """(workdir, model name, run) of every ``--run``, parameters restored onto the mesh ``on``
  (``mesh(values)``); with ``reading`` (what the runs will read), a run without a tokenizer
  fails."""
  from mosaics_jax.train import checkpoint  # pylint: disable=import-outside-toplevel
  return [checkpoint.load_run_flag(spec, reading=reading, mesh=on) for spec in values.run]


class Output:
  """An evaluation's output directory, local or in a bucket (created when first written)."""

  def __init__(self, directory):
    self.directory = str(directory).rstrip("/")

  def path(self, name: str) -> str:
    return f"{self.directory}/{name}"

  def write_text(self, name: str, content: str) -> str:
    storage.write_bytes(self.path(name), content.encode())
    return self.path(name)

  def write_json(self, name: str, value, indent: int | None = 1) -> str:
    return self.write_text(name, json.dumps(value, indent=indent))
