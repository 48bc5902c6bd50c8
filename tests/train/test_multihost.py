"""Two processes on localhost (CPU, 4 devices each) train together, agree with each other and
with one process of 8 devices, and a run of two processes resumes as one."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(num_processes, devices, workdir):
  coordinator = f"127.0.0.1:{_free_port()}"
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  processes = [subprocess.Popen([sys.executable, str(WORKER), coordinator, str(num_processes),
                                 str(i), str(devices), str(workdir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(num_processes)]
  results = []
  for process in processes:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-4000:]
    line = next(row for row in output.splitlines() if row.startswith("RESULT "))
    results.append(json.loads(line[len("RESULT "):]))
  return results


@pytest.mark.slow
def test_two_processes_train_together(tmp_path):
  pair = _launch(2, 4, tmp_path / "two")
  assert [r["process"] for r in pair] == [0, 1]
  assert all(r["processes"] == 2 and r["devices"] == 8 and r["step"] == 6 for r in pair)
  assert pair[0]["checksum"] == pair[1]["checksum"]
  assert pair[0]["validation_loss"] == pair[1]["validation_loss"]
  assert pair[0]["samples"] == pair[1]["samples"]
  (single,) = _launch(1, 8, tmp_path / "one")
  assert abs(single["validation_loss"] - pair[0]["validation_loss"]) < 1e-5
  assert abs(single["checksum"] - pair[0]["checksum"]) <= 1e-5 * abs(single["checksum"])
  # Each process wrote its part of the same checkpoints.
  assert (tmp_path / "two" / "mosaic" / "checkpoints" / "6").is_dir()

  # One process resumes the two processes' checkpoint of step 3: the same batches, so the
  # same model as the uninterrupted runs (the data position is a batch index, not per-host
  # state, so the host count may change).
  shutil.copytree(tmp_path / "two", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "mosaic" / "checkpoints" / "6")
  (resumed,) = _launch(1, 8, tmp_path / "resumed")
  assert resumed["step"] == 6
  assert abs(resumed["validation_loss"] - pair[0]["validation_loss"]) < 1e-5
  assert abs(resumed["checksum"] - pair[0]["checksum"]) <= 1e-5 * abs(pair[0]["checksum"])
