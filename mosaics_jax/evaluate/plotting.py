"""Plot helpers shared by the evaluations: figures go to PNG files only (the Agg backend)."""

from __future__ import annotations


def pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use so that the library imports
  without a display (and quickly)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save(figure, path: str, dpi: int = 120) -> None:
  """Lay out, write and close a figure."""
  figure.tight_layout()
  figure.savefig(path, dpi=dpi)
  pyplot().close(figure)
