"""Strip outputs, execution counts and widget state from notebooks before committing them.

    python notebooks/strip_outputs.py                  # every notebook in notebooks/
    python notebooks/strip_outputs.py path.ipynb ...
"""

import pathlib
import sys

import nbformat

# Cell metadata that Jupyter and Colab add when running a cell.
RUN_METADATA = ("execution", "executionInfo", "outputId", "scrolled", "collapsed")


def strip(path: pathlib.Path) -> bool:
  """Strip one notebook in place; True if it changed."""
  notebook = nbformat.read(path, as_version=4)
  before = nbformat.writes(notebook)
  notebook.metadata.pop("widgets", None)
  for cell in notebook.cells:
    for key in RUN_METADATA:
      cell.metadata.pop(key, None)
    if cell.cell_type == "code":
      cell.outputs = []
      cell.execution_count = None
  if nbformat.writes(notebook) == before:
    return False
  nbformat.write(notebook, path)
  return True


if __name__ == "__main__":
  paths = [pathlib.Path(p) for p in sys.argv[1:]] or sorted(
      pathlib.Path(__file__).resolve().parent.glob("*.ipynb"))
  for path in paths:
    if strip(path):
      print(f"stripped {path}")
