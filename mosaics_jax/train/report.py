"""The comparison written after an experiment: report.md, loss_curves.png, and a table on stdout."""

from __future__ import annotations

import io
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mosaics_jax import storage  # noqa: E402
from mosaics_jax.train import metrics  # noqa: E402


def plot_losses(workdir, names, path) -> None:
  """Training loss (solid) and validation loss (dots) against step, one colour per model."""
  figure, axis = plt.subplots(figsize=(7, 4.2))
  for index, name in enumerate(names):
    rows = metrics.read_metrics(storage.path(workdir) / name)
    colour = f"C{index}"
    train = sorted({r["step"]: r["train/loss"] for r in rows if "train/loss" in r}.items())
    valid = sorted({r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}.items())
    if train:
      axis.plot(*zip(*train), color=colour, label=f"{name} (train)")
    if valid:
      axis.plot(*zip(*valid), "o--", color=colour, label=f"{name} (validation)")
  axis.set_xlabel("step")
  axis.set_ylabel("cross-entropy (nats / token)")
  axis.grid(alpha=0.3)
  axis.legend()
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=120)
  plt.close(figure)
  storage.write_bytes(path, image.getvalue())


def write(workdir, results: dict, data_description: str) -> str:
  """Write report.md and loss_curves.png in ``workdir``; print and return the table."""
  workdir = storage.path(workdir)
  names = list(results)
  plot_losses(workdir, names, workdir / "loss_curves.png")
  rows = ["| model | kind | parameters | steps | validation loss | perplexity |",
          "| --- | --- | ---: | ---: | ---: | ---: |"]
  for name, result in results.items():
    config = result.model_config
    kind = (f"Memory Mosaic v{config.version}" if hasattr(config, "version")
            else f"transformer ({config.position} positions)")
    loss = result.validation_loss
    rows.append(f"| {name} | {kind} | {result.parameters:,} | {result.step} | "
                f"{loss:.4f} | {math.exp(loss):.2f} |" if loss is not None else
                f"| {name} | {kind} | {result.parameters:,} | {result.step} | - | - |")
  extra = sorted({key for result in results.values() for key in result.metrics})
  if extra:
    rows[0] += " " + " | ".join(extra) + " |"
    rows[1] += " ---: |" * len(extra)
    for row, result in zip(range(2, len(rows)), results.values()):
      rows[row] += " " + " | ".join(f"{result.metrics[k]:.4f}" if k in result.metrics else "-"
                                    for k in extra) + " |"
  table = "\n".join(rows)
  summary = {name: {"parameters": r.parameters, "step": r.step,
                    "validation_loss": r.validation_loss, "metrics": r.metrics}
             for name, r in results.items()}
  storage.write_bytes(workdir / "results.json", json.dumps(summary, indent=2).encode())
  lines = ["# Results", "", f"Data: {data_description}.", "", table, "",
           "![loss curves](loss_curves.png)", "", "## Samples", ""]
  for name, result in results.items():
    lines.append(f"### {name}")
    lines.append("")
    for prompt, continuation in result.samples:
      lines.append(f"* **{prompt}** {continuation}")
    lines.append("")
  storage.write_bytes(workdir / "report.md", "\n".join(lines).encode())
  print(f"\n{table}\n\nReport: {workdir / 'report.md'}, curves: "
        f"{workdir / 'loss_curves.png'}, TensorBoard: tensorboard --logdir {workdir}",
        flush=True)
  return table
