"""Every command (``python -m ...``) is an absl app whose ``--help`` lists its flags, each with a
line of help."""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Imports the heavy packages once, then forks a child per command: 15 commands in one
# interpreter start (each child gets a fresh absl FLAGS, defined by its own __main__ block).
DRIVER = r"""
import io, json, os, runpy, sys
import flax, jax, optax, orbax.checkpoint  # noqa: F401
results = {}
for module in sys.argv[1:]:
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read)
    os.dup2(write, 1)
    os.dup2(write, 2)
    sys.argv = [module, "--help"]
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
      code = 0
    except SystemExit as exit:
      code = exit.code or 0
    except BaseException:  # pylint: disable=broad-except
      import traceback
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  os.close(write)
  with os.fdopen(read) as pipe:
    output = pipe.read()
  _, status = os.waitpid(pid, 0)
  results[module] = [os.waitstatus_to_exitcode(status), output]
print(json.dumps(results))
"""


def commands() -> list[str]:
  """Every module of the package with a ``__main__`` block (or a package's __main__.py)."""
  found = []
  for root in ("mosaics_jax", "experiments"):
    for path in sorted((ROOT / root).rglob("*.py")):
      if 'if __name__ == "__main__":' in path.read_text() or path.name == "__main__.py":
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
  return found


def own_flags(output: str, module: str) -> dict[str, str]:
  """flag -> help line, from the section of ``--help`` for the module's own file."""
  lines = output.splitlines()
  suffix = "/" + module.replace(".", "/")
  start = next((i for i, line in enumerate(lines)
                if line.rstrip(":").endswith((suffix + ".py", suffix + "/__main__.py"))), None)
  if start is None:
    return {}
  flags = {}
  for line in lines[start + 1:]:
    if not line.strip():
      break
    match = re.match(r"  --(?:\[no\])?(\w+): ?(.*)", line)
    if match:
      flags[match.group(1)] = match.group(2).strip()
  return flags


COMMON = ROOT / "mosaics_jax" / "evaluate" / "command.py"
HARNESS = "mosaics_jax.evaluate.harness"


def test_every_command_lists_its_flags_with_help():
  modules = commands()
  assert {"mosaics_jax.main", "mosaics_jax.generate", "mosaics_jax.compile",
          "mosaics_jax.train.memory", "mosaics_jax.models", "experiments.registry",
          "mosaics_jax.evaluate.regbench"} <= set(modules)
  run = subprocess.run([sys.executable, "-c", DRIVER, *modules], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, check=True)
  results = json.loads(run.stdout.splitlines()[-1])
  for module in modules:
    code, output = results[module]
    if module == HARNESS:  # lm_eval's own argparse command line, with our model registered
      assert code == 0 and "--model_args" in output and "Traceback" not in output, output[-2000:]
      continue
    # absl's --help prints the usage and exits 1.
    assert code == 1 and "Try --helpfull" in output and "Traceback" not in output, \
        f"{module} --help exited {code}:\n{output[-2000:]}"
    source = next(p for p in (ROOT / (module.replace(".", "/") + ".py"),
                              ROOT / module.replace(".", "/") / "__main__.py") if p.exists())
    defined = set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', source.read_text()))
    flags = own_flags(output, module)
    # Evaluations also list the common flags of evaluate/command.py that they ask for.
    common = set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', COMMON.read_text())) if (
        "command.define_common(" in source.read_text()) else set()
    assert defined <= set(flags) <= defined | common, \
        f"{module} --help lists {sorted(flags)}, defines {sorted(defined)}"
    empty = [name for name, text in flags.items() if not text]
    assert not empty, f"{module}: flags without help: {empty}"
  assert set(own_flags(results["mosaics_jax.train.memory"][1], "mosaics_jax.train.memory")) == {
      "model", "lengths", "remat", "batch"}


def test_no_command_parses_its_own_arguments():
  """One convention: absl flags everywhere (argparse nowhere in the package)."""
  users = [str(p.relative_to(ROOT)) for p in (ROOT / "mosaics_jax").rglob("*.py")
           if re.search(r"^import argparse|^from argparse", p.read_text(), re.M)]
  assert not users
