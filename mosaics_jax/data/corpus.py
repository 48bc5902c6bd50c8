"""Reading text corpora (local files or objects in a bucket, ``gs://...``) into lists of documents.

Formats (``format=``):
  * ``lines``: plain text, one document per non-empty line.
  * ``blocks``: plain text, documents separated by blank lines.
  * ``jsonl``: one JSON object per line; the document is its ``text_field``.
  * ``babistories``: the official BabiStories files, one JSON-encoded string per line.
  * ``parquet``: a table with a ``text_field`` column (needs pyarrow).
  * ``auto``: by extension (.jsonl/.json -> jsonl, .parquet -> parquet, otherwise lines), and
    a .txt whose first line is a JSON string -> babistories.

Paths may be globs and comma-separated lists; ``package:NAME`` names a corpus shipped in
``mosaics_jax/data/resources`` (e.g. ``package:tinystories/train.txt``).
"""

from __future__ import annotations

import json
import pathlib

from mosaics_jax import storage

FORMATS = ("auto", "lines", "blocks", "jsonl", "babistories", "parquet")
RESOURCES = pathlib.Path(__file__).resolve().parent / "resources"


class DataError(ValueError):
  """Input data that cannot be used; the message names the file and the fix."""


def resolve_paths(patterns: str) -> list[str]:
  """Files matching comma-separated globs (``package:`` names resolved), sorted, deduplicated."""
  if not patterns or not patterns.strip():
    raise DataError("No data files given: set config.data.train_files / validation_files.")
  paths: list[str] = []
  for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
    if pattern.startswith("package:"):
      pattern = str(RESOURCES / pattern[len("package:"):])
    matches = storage.glob(pattern)
    if not matches:
      raise DataError(f"No file matches {pattern!r}: check the path (globs and comma-separated "
                      "lists are allowed; shipped corpora are 'package:tinystories/train.txt').")
    paths += [m for m in matches if m not in paths]
  return paths


def detect_format(path: str) -> str:
  suffix = pathlib.Path(path).suffix.lower()
  if suffix in (".jsonl", ".json"):
    return "jsonl"
  if suffix == ".parquet":
    return "parquet"
  with storage.path(path).open("rb") as f:
    first = next((line for line in f if line.strip()), b"").decode("utf-8", "replace")
  try:
    if isinstance(json.loads(first), str):
      return "babistories"
  except ValueError:
    pass
  return "lines"


def _read_one(path: str, fmt: str, text_field: str) -> list[str]:
  if fmt == "parquet":
    try:
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise DataError(f"{path} is Parquet: install pyarrow (pip install pyarrow).") from error
    with storage.path(path).open("rb") as f:
      table = pq.read_table(f)
    if text_field not in table.column_names:
      raise DataError(f"{path} has no column {text_field!r} (columns: {table.column_names}); "
                      "set config.data.text_field.")
    return [str(t) for t in table.column(text_field).to_pylist() if t and str(t).strip()]
  try:
    with storage.path(path).open(encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as error:
    raise DataError(f"{path} is not UTF-8 text ({error}); convert it or choose the right file.") \
        from error
  if fmt == "blocks":
    return [block.strip() for block in text.split("\n\n") if block.strip()]
  lines = [line for line in text.splitlines() if line.strip()]
  if fmt == "lines":
    return [line.strip() for line in lines]
  documents = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except ValueError as error:
      raise DataError(f"{path}:{number} is not valid JSON ({error}); is format={fmt!r} right?") \
          from error
    if fmt == "babistories":
      if not isinstance(record, str):
        raise DataError(f"{path}:{number}: BabiStories lines are JSON strings, got "
                        f"{type(record).__name__}; use format='jsonl' for objects.")
      documents.append(record)
    else:
      if not isinstance(record, dict) or text_field not in record:
        raise DataError(f"{path}:{number} has no field {text_field!r}; set config.data.text_field.")
      documents.append(str(record[text_field]))
  return [d for d in documents if d.strip()]


def read_documents(patterns: str, fmt: str = "auto", text_field: str = "text") -> list[str]:
  """All documents of the matching files, in file order."""
  if fmt not in FORMATS:
    raise DataError(f"Unknown data format {fmt!r}; choose one of {FORMATS}.")
  documents: list[str] = []
  for path in resolve_paths(patterns):
    found = _read_one(path, detect_format(path) if fmt == "auto" else fmt, text_field)
    if not found:
      raise DataError(f"{path} contains no documents (empty file, or the wrong format/field).")
    documents += found
  return documents
