"""The built wheel, installed outside the checkout, is the whole program: experiments by name,
a notebook and generation run from an empty directory with no checkout on the path.

The fresh virtualenv gets the wheel alone (``--no-deps``); its dependencies come from this
interpreter's site-packages through a ``.pth`` line, which adds that directory to the path
without running its ``.pth`` files, so the editable install of the checkout stays out.
"""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import venv

import nbclient
import nbformat
import pytest

from tests.test_notebooks import CI_SETTINGS, _with_settings

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(python of a fresh virtualenv holding only the built wheel, an empty working directory)."""
  root = tmp_path_factory.mktemp("installed")
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(root / "dist"), str(REPO)], capture_output=True, text=True)
  assert built.returncode == 0, built.stderr
  wheel = next((root / "dist").glob("mosaics_jax-*.whl"))
  venv.EnvBuilder(with_pip=False).create(root / "venv")
  python = root / "venv" / "bin" / "python"
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        capture_output=True, text=True, check=True).stdout.strip()
  pathlib.Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                  str(wheel)], check=True)
  empty = root / "cwd"
  empty.mkdir()
  return python, empty


def _environment():
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  return dict(env, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _run(installed, *args):
  python, cwd = installed
  return subprocess.run([str(python), *args], cwd=cwd, env=_environment(), capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
def test_the_wheel_trains_an_experiment_by_name_and_generates(installed):
  where = _run(installed, "-c", "import mosaics_jax, experiments; print(mosaics_jax.__file__); "
               "print(experiments.__file__)")
  assert where.returncode == 0, where.stderr
  assert all(str(installed[0].parents[1]) in line for line in where.stdout.split()), where.stdout
  assert str(REPO) not in where.stdout

  listed = _run(installed, "-m", "experiments.registry")
  assert listed.returncode == 0 and "quickstart" in listed.stdout and "regbench" in listed.stdout

  workdir = installed[1] / "run"
  trained = _run(installed, "-m", "mosaics_jax.main", "--config=quickstart:tiny",
                 f"--workdir={workdir}", "--config.train.models=mosaic",
                 "--config.train.num_steps=4", "--config.optimizer.warmup_steps=1")
  assert trained.returncode == 0, trained.stderr
  assert (workdir / "report.md").exists()
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4

  generated = _run(installed, "-m", "mosaics_jax.generate", f"--workdir={workdir}",
                   "--model=mosaic", "--prompt=Once upon a time", "--max_new_tokens=8")
  assert generated.returncode == 0 and "Once upon a time" in generated.stdout, generated.stderr

  unknown = _run(installed, "-m", "mosaics_jax.main", "--config=quickstartt",
                 f"--workdir={workdir}")
  assert unknown.returncode != 0 and "no experiment 'quickstartt'" in unknown.stderr


@pytest.mark.slow
def test_a_notebook_runs_from_the_wheel(installed, tmp_path, monkeypatch):
  """three_moons.ipynb, in a kernel of the fresh virtualenv, from the empty directory."""
  python, cwd = installed
  kernels = tmp_path / "jupyter" / "kernels" / "installed"
  kernels.mkdir(parents=True)
  (kernels / "kernel.json").write_text(json.dumps({
      "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "installed wheel", "language": "python"}))
  notebook = nbformat.read(REPO / "notebooks" / "three_moons.ipynb", as_version=4)
  _with_settings(notebook, CI_SETTINGS["three_moons"])
  client = nbclient.NotebookClient(notebook, kernel_name="installed", timeout=300,
                                   resources={"metadata": {"path": str(cwd)}})
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # where the client finds it
  client.execute(env=_environment())
  printed = "".join(output.get("text", "") for cell in notebook.cells
                    for output in cell.get("outputs", []))
  assert f"mosaics_jax from {python.parents[1]}" in printed, printed[:2000]
