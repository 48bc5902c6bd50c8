"""What every benchmark script does with its rows: print the table, ``--json`` writes them,
``--record`` appends a section to docs/benchmarks.md with the device, jax version, date and
the exact command."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib


DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def add_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--json", default="", help="write the rows to this JSON file")
  parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
  parser.add_argument("--markdown", default=str(DOCS))


def device(count_devices: bool = False) -> str:
  """'cpu (cpu)', or with ``count_devices`` '8 x cpu (cpu)' (a step over every device)."""
  import jax  # pylint: disable=import-outside-toplevel  # lazily: not on a torch-only side
  kind = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
  return f"{jax.device_count()} x {kind}" if count_devices else kind


def report(rows: list[dict], table: str, args, heading: str, script: str, argv: list[str],
           device_description: str) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  print(table)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  if args.record:
    with open(args.markdown, "a") as f:
      f.write(f"\n### {heading}, {datetime.date.today().isoformat()}\n\n"
              f"Device: {device_description}, jax {jax.__version__}. Command: "
              f"`python benchmarks/{script} {' '.join(argv)}`\n\n{table}\n")
