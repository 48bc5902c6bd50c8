"""The notebooks in notebooks/ run end to end on CPU, and are committed without outputs."""

import os
import pathlib
import re

import nbclient
import nbformat
import pytest
from ipykernel import kernelspec
from nbclient.exceptions import CellExecutionError, CellTimeoutError

from tests.conftest import REFERENCE_DIR

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
# The tests run some notebooks with shorter settings than a user's defaults (the whole suite
# must stay under 10 minutes on 2 cores); each name must be a setting of the notebook's
# "Settings" cell, else the test fails.
CI_SETTINGS = {"quickstart": {"STEPS": 40}, "regbench": {"STEPS": 20, "TEST_AUTOMATA": 10},
               "three_moons": {"STEPS": 250}}
# Kernels compile with XLA's optimisations off, like the tests (conftest), except where the
# notebook runs long loops more than it compiles.
OPTIMISED = {"three_moons", "regbench"}
ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # in the kernel's tracebacks


def _kernel_environment(tmp_path, monkeypatch, optimised: bool) -> dict:
  """A ``python3`` kernelspec that runs this interpreter (a user's own python3 kernelspec could
  point at another one), and the kernel's environment: this process's, so the compilation cache
  that conftest sets is shared, but not conftest's 8 fake devices: each notebook picks its
  devices as it would on a user's machine."""
  kernelspec.write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  dropped = {"XLA_FLAGS"} | ({"JAX_DISABLE_MOST_OPTIMIZATIONS"} if optimised else set())
  environment = {k: v for k, v in os.environ.items() if k not in dropped}
  environment["MOSAICS_REFERENCE_DIR"] = str(REFERENCE_DIR)  # official_checkpoint's oracle
  return environment


def _with_settings(notebook, settings: dict) -> None:
  """Rewrite ``NAME = value  # @param`` lines of the notebook's cells to the given values."""
  for name, value in settings.items():
    line = re.compile(rf"^{name} = [^#\n]*(#.*)?$", re.MULTILINE)
    cells = [c for c in notebook.cells if c.cell_type == "code" and line.search(c.source)]
    assert len(cells) == 1, f"no single setting {name} in the notebook"
    cells[0].source = line.sub(lambda m, v=value: f"{name} = {v!r}  {m.group(1) or ''}",
                               cells[0].source)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
  notebook = nbformat.read(path, as_version=4)
  _with_settings(notebook, CI_SETTINGS.get(path.stem, {}))
  environment = _kernel_environment(tmp_path, monkeypatch, path.stem in OPTIMISED)
  work = tmp_path / "cwd"  # the kernel's working directory: nothing is written into the repo
  work.mkdir()
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": str(work)}})
  failure = None
  try:
    client.execute(env=environment)
  except (CellExecutionError, CellTimeoutError) as error:  # the message holds the cell's source
    failure = f"{path.name}: {ANSI_COLOURS.sub('', str(error))}"
  if failure:  # outside the except clause: the kernel's traceback, once
    pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  assert notebook.metadata.kernelspec.name == "python3"
  assert "widgets" not in notebook.metadata, f"{path.name}: widget state in the metadata"
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{path.name}, cell {index}: outputs or an execution count are committed; run "
          "python notebooks/strip_outputs.py")
