"""Plot helpers shared by the evaluations: figures go to PNG files only (the Agg backend),
local or in a bucket."""

from __future__ import annotations

import io

from mosaics_jax import storage


def pyplot():
  """matplotlib.pyplot on the Agg backend, imported on first use so that the library imports
  without a display (and quickly)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save(figure, path: str, dpi: int = 120) -> None:
  """Lay out, write (through ``mosaics_jax.storage``) and close a figure."""
  figure.tight_layout()
  png = io.BytesIO()
  figure.savefig(png, dpi=dpi, format="png")
  pyplot().close(figure)
  storage.write_bytes(path, png.getvalue())
