"""Every experiment by name.

    from experiments import registry
    registry.names()                          # ['babistories_v1', 'quickstart', ...]
    config = registry.get_config("quickstart", "tiny")
    python -m experiments.registry            # the list, with each one's summary

An experiment is one file in ``experiments/configs/`` with ``get_config(arg)`` returning a
locked ConfigDict, and a docstring that gives the command, the hardware, the runtime and the
expected result. The command line takes the name or the file: ``--config=NAME:ARG`` (e.g.
``quickstart:tiny``, ``regbench:n=100,cpu``; from any directory, the experiments are installed
with the package) or ``--config=experiments/configs/NAME.py:ARG``.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types

from absl import app

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


def names() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def path(name: str) -> pathlib.Path:
  if name not in names():
    raise ValueError(f"Unknown experiment {name!r}; known: {', '.join(names())}.")
  return CONFIG_DIR / f"{name}.py"


def load(name: str) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(f"experiments.configs.{name}", path(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name: str, arg: str = ""):
  return load(name).get_config(arg)


def expand_config_names(argv: list[str]) -> list[str]:
  """A command line with ``--config=NAME[:ARG]`` (a registered name) turned into the file's
  path, for ml_collections' ``DEFINE_config_file``; paths and other arguments are kept."""
  expanded = list(argv)
  for i, argument in enumerate(expanded):
    if argument.startswith("--config="):
      value, prefix = argument[len("--config="):], "--config="
    elif i > 0 and expanded[i - 1] == "--config":
      value, prefix = argument, ""
    else:
      continue
    name, colon, arg = value.partition(":")
    if name in names():
      expanded[i] = f"{prefix}{path(name)}{colon}{arg}"
    elif "/" not in name and not name.endswith(".py"):
      raise SystemExit(f"--config={value}: no experiment {name!r}; give one of {', '.join(names())}"
                       " (python -m experiments.registry lists them) or a config file's path.")
  return expanded


def summary(name: str) -> str:
  return (load(name).__doc__ or "").strip().splitlines()[0]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; this command takes none")
  for experiment in names():
    print(f"{experiment:24s} {summary(experiment)}")


if __name__ == "__main__":
  app.run(main)
