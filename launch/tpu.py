r"""Cloud TPU VMs and pod slices: create, install, run the same command on every worker, delete.

    python launch/tpu.py up --name=mm --zone=us-east5-a --accelerator=v5p-32 --spot \
        --retries=5 -- --config=experiments/configs/babistories_v1.py --workdir=gs://BUCKET/mm
    python launch/tpu.py logs --name=mm --zone=us-east5-a
    python launch/tpu.py delete --name=mm --zone=us-east5-a

Every subcommand takes ``--dry-run``: it prints the exact ``gcloud`` commands and runs nothing.
``up`` = ``create`` + ``setup`` + ``run``; with ``--retries`` it watches the slice and, when a
spot or preemptible slice is preempted, deletes it, creates it again and reruns the command,
which resumes from the last checkpoint in the workdir (a bucket, or storage every worker
mounts).
``--queued`` asks for the slice through a queued resource (capacity granted when available)
instead of creating it at once.

The code goes to the workers as ``git archive HEAD`` (commit first); ``setup`` makes a venv in
``~/mosaics_jax`` on every worker and installs the project with its ``tpu`` extra (libtpu)
and ``gcsfs`` (for ``gs://`` workdirs and corpora). The run is
``python -m mosaics_jax.main ARGS`` on all workers at once: ``jax.distributed`` finds the
other workers from the TPU environment, and each worker reads its slice of the data.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
REMOTE_DIR = "mosaics_jax"
ARCHIVE = "/tmp/mosaics_jax.tar.gz"
LOG = "~/mosaics_jax/run.log"
DEFAULT_VERSIONS = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base",
                    "v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
ACCELERATOR = re.compile(r"^(v2|v3|v4|v5litepod|v5p|v6e)-(\d+)$")


class LaunchError(SystemExit):
  """Bad arguments: the message names the problem and the fix; exits non-zero."""

  def __init__(self, message: str):
    super().__init__(f"launch/tpu.py: {message}")


def runtime_version(accelerator: str, version: str) -> str:
  match = ACCELERATOR.match(accelerator)
  if not match:
    raise LaunchError(f"--accelerator={accelerator!r} is not a TPU type like v5p-32, "
                      f"v5litepod-16, v6e-8, v4-32 or v2-8 (families: {sorted(DEFAULT_VERSIONS)}).")
  return version or DEFAULT_VERSIONS[match.group(1)]


def gcloud_tpu(*args: str, zone: str, project: str) -> list[str]:
  command = ["gcloud", "compute", "tpus", *args, f"--zone={zone}"]
  return command + ([f"--project={project}"] if project else [])


def create_commands(a) -> list[list[str]]:
  version = runtime_version(a.accelerator, a.version)
  capacity = ["--spot"] if a.spot else []
  if a.queued:
    return [gcloud_tpu("queued-resources", "create", a.name, f"--node-id={a.name}",
                       f"--accelerator-type={a.accelerator}", f"--runtime-version={version}",
                       *capacity, zone=a.zone, project=a.project)]
  return [gcloud_tpu("tpu-vm", "create", a.name, f"--accelerator-type={a.accelerator}",
                     f"--version={version}", *capacity, zone=a.zone, project=a.project)]


def ssh_all(a, remote: str, worker: str = "all") -> list[str]:
  return gcloud_tpu("tpu-vm", "ssh", a.name, f"--worker={worker}", f"--command={remote}",
                    zone=a.zone, project=a.project)


def setup_commands(a) -> list[list[str]]:
  install = " && ".join([
      f"mkdir -p ~/{REMOTE_DIR}", f"tar -xzf ~/{ARCHIVE.split('/')[-1]} -C ~/{REMOTE_DIR}",
      f"cd ~/{REMOTE_DIR}", "python3 -m venv .venv",
      ".venv/bin/pip install -q -U pip", ".venv/bin/pip install -q -e '.[tpu]' gcsfs"])
  return [["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"],
          gcloud_tpu("tpu-vm", "scp", ARCHIVE, f"{a.name}:~/", "--worker=all",
                     zone=a.zone, project=a.project),
          ssh_all(a, install)]


def run_command(a) -> list[str]:
  if not a.args:
    raise LaunchError("no training arguments: add them after '--', e.g. -- "
                      "--config=experiments/configs/quickstart.py --workdir=gs://BUCKET/run")
  workdir = next((x.split("=", 1)[1] for x in a.args if x.startswith("--workdir=")), "")
  shared = workdir.startswith("gs://") or (workdir.startswith("/") and
                                           not workdir.startswith("/tmp"))
  if not shared:
    raise LaunchError(f"--workdir={workdir or '(missing)'}: every worker must read and write the "
                      "same checkpoints; give a bucket (--workdir=gs://BUCKET/runs/NAME) or an "
                      "absolute path on storage that all workers mount (Filestore).")
  program = " ".join(shlex.quote(x) for x in ["python", "-m", "mosaics_jax.main", *a.args])
  env = f"{a.env} " if a.env else ""
  # nohup: the run outlives the ssh session; each worker keeps its log for ``logs``.
  return ssh_all(a, f"cd ~/{REMOTE_DIR} && {env}nohup .venv/bin/{program} > {LOG} 2>&1 "
                    "< /dev/null &")


def state_command(a) -> list[str]:
  return gcloud_tpu("tpu-vm", "describe", a.name, "--format=value(state)", zone=a.zone,
                    project=a.project)


def delete_commands(a) -> list[list[str]]:
  if a.queued:
    return [gcloud_tpu("queued-resources", "delete", a.name, "--force", "--quiet", zone=a.zone,
                       project=a.project)]
  return [gcloud_tpu("tpu-vm", "delete", a.name, "--quiet", zone=a.zone, project=a.project)]


def logs_command(a) -> list[str]:
  return ssh_all(a, f"tail -n 200 -f {LOG}", worker=str(a.worker))


def execute(commands: list[list[str]], dry_run: bool, check: bool = True) -> None:
  for command in commands:
    print(shlex.join(command), flush=True)
    if not dry_run:
      subprocess.run(command, check=check)


def up(a) -> None:
  """create, setup, run; then, with --retries, recreate and rerun after each preemption."""
  commands = [*create_commands(a), *setup_commands(a), run_command(a)]
  execute(commands, a.dry_run)
  if a.dry_run:
    if a.retries:
      print(f"# then every {a.poll_seconds} s: {shlex.join(state_command(a))}; on PREEMPTED "
            f"(at most {a.retries} times): delete, the commands above again")
    return
  for attempt in range(a.retries):
    state = "READY"
    while state not in ("PREEMPTED", "TERMINATED", ""):  # "": gone (queued resource reclaimed)
      time.sleep(a.poll_seconds)
      state = subprocess.run(state_command(a), capture_output=True, text=True).stdout.strip()
    print(f"# slice {a.name} {state or 'gone'}: recreating ({attempt + 1}/{a.retries})",
          flush=True)
    execute(delete_commands(a), dry_run=False, check=False)
    execute(commands, dry_run=False)


def parser() -> argparse.ArgumentParser:
  main = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  commands = main.add_subparsers(dest="command", required=True)
  for name in ("create", "setup", "run", "up", "logs", "delete"):
    sub = commands.add_parser(name)
    sub.add_argument("--name", required=True, help="TPU VM / slice name")
    sub.add_argument("--zone", required=True, help="e.g. us-east5-a")
    sub.add_argument("--project", default="", help="Google Cloud project (default: gcloud's)")
    sub.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    if name in ("create", "up", "delete"):
      sub.add_argument("--queued", action="store_true", help="through a queued resource")
    if name in ("create", "up"):
      sub.add_argument("--accelerator", required=True, help="v5p-32, v5litepod-16, v6e-8, ...")
      sub.add_argument("--version", default="", help="TPU software version (default: by family)")
      sub.add_argument("--spot", action="store_true", help="spot capacity (preemptible)")
    if name in ("run", "up"):
      sub.add_argument("--env", default="", help="VAR=value pairs set for the run")
      sub.add_argument("args", nargs=argparse.REMAINDER,
                       help="after '--': the arguments of python -m mosaics_jax.main")
    if name == "up":
      sub.add_argument("--retries", type=int, default=0, help="recreations after preemption")
      sub.add_argument("--poll_seconds", type=int, default=300)
    if name == "logs":
      sub.add_argument("--worker", type=int, default=0)
  return main


def main(argv=None) -> None:
  a = parser().parse_args(argv)
  if hasattr(a, "args") and a.args[:1] == ["--"]:
    a.args = a.args[1:]
  if a.command == "up":
    up(a)
    return
  commands = {"create": lambda: create_commands(a), "setup": lambda: setup_commands(a),
              "run": lambda: [run_command(a)], "logs": lambda: [logs_command(a)],
              "delete": lambda: delete_commands(a)}[a.command]()
  execute(commands, a.dry_run)


if __name__ == "__main__":
  main(sys.argv[1:])
