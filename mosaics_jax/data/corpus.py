"""Reading text corpora (local files or objects in a bucket, ``gs://...``) into lists of documents.

Formats (``format=``):
  * ``lines``: plain text, one document per non-empty line.
  * ``blocks``: plain text, documents separated by blank lines.
  * ``jsonl``: one JSON object per line; the document is its ``text_field``.
  * ``babistories``: the official BabiStories files, one JSON-encoded string per line.
  * ``parquet``: a table with a ``text_field`` column (needs pyarrow).
  * ``auto``: by extension (.jsonl/.json -> jsonl, .parquet -> parquet, otherwise lines), and
    a .txt whose first line is a JSON string -> babistories.

Any file may be compressed (``.gz``, ``.zst``; zstandard needed for the latter): read streamed,
as every format is (``iter_documents``), so memory does not grow with a file's size.

Paths may be globs and comma-separated lists; ``package:NAME`` names a corpus shipped in
``mosaics_jax/data/resources`` (e.g. ``package:tinystories/train.txt``).
"""

from __future__ import annotations

import contextlib
import gzip
import io
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


COMPRESSIONS = (".gz", ".zst")


def _stem_suffix(path: str) -> str:
  """The format-giving suffix: ``a.jsonl.gz`` -> ``.jsonl``."""
  pure = pathlib.PurePosixPath(path)
  if pure.suffix.lower() in COMPRESSIONS:
    pure = pure.with_suffix("")
  return pure.suffix.lower()


@contextlib.contextmanager
def open_binary(path: str):
  """The bytes of a file, decompressed on the fly for ``.gz`` and ``.zst`` (streamed: memory
  stays at a buffer whatever the file's size)."""
  with storage.path(path).open("rb") as raw:
    suffix = pathlib.PurePosixPath(path).suffix.lower()
    if suffix == ".gz":
      with gzip.GzipFile(fileobj=raw) as f:
        yield f
    elif suffix == ".zst":
      try:
        import zstandard  # pylint: disable=import-outside-toplevel
      except ImportError as error:
        raise DataError(f"{path} is Zstandard-compressed: pip install zstandard.") from error
      with zstandard.ZstdDecompressor().stream_reader(raw) as f:
        yield io.BufferedReader(f)
    else:
      yield raw


def detect_format(path: str) -> str:
  suffix = _stem_suffix(path)
  if suffix in (".jsonl", ".json"):
    return "jsonl"
  if suffix == ".parquet":
    return "parquet"
  with open_binary(path) as f:
    first = next((line for line in f if line.strip()), b"").decode("utf-8", "replace")
  try:
    if isinstance(json.loads(first), str):
      return "babistories"
  except ValueError:
    pass
  return "lines"


def _lines(path: str):
  """(line number, text) of a text file, each line decoded on its own so that a bad byte is
  reported with its line."""
  with open_binary(path) as f:
    for number, raw in enumerate(f, 1):
      try:
        yield number, raw.decode("utf-8").rstrip("\r\n")
      except UnicodeDecodeError as error:
        raise DataError(f"{path}:{number} is not UTF-8 text ({error}); convert the file or "
                        "remove the line.") from error


def iter_documents(path: str, fmt: str = "auto", text_field: str = "text"):
  """The documents of one file, streamed (``fmt`` as in the module docstring)."""
  fmt = detect_format(path) if fmt == "auto" else fmt
  if fmt not in FORMATS:
    raise DataError(f"Unknown data format {fmt!r}; choose one of {FORMATS}.")
  if fmt == "parquet":
    yield from _parquet_documents(path, text_field)
    return
  if fmt == "blocks":
    block: list[str] = []
    for _, line in _lines(path):
      if line.strip():
        block.append(line)
      elif block:
        yield "\n".join(block).strip()
        block = []
    if block:
      yield "\n".join(block).strip()
    return
  for number, line in _lines(path):
    if not line.strip():
      continue
    if fmt == "lines":
      yield line.strip()
      continue
    try:
      record = json.loads(line)
    except ValueError as error:
      raise DataError(f"{path}:{number} is not valid JSON ({error}); is format={fmt!r} right?") \
          from error
    if fmt == "babistories":
      if not isinstance(record, str):
        raise DataError(f"{path}:{number}: BabiStories lines are JSON strings, got "
                        f"{type(record).__name__}; use format='jsonl' for objects.")
      document = record
    else:
      if not isinstance(record, dict) or text_field not in record:
        raise DataError(f"{path}:{number} has no field {text_field!r}; set config.data.text_field.")
      document = str(record[text_field])
    if document.strip():
      yield document


def _parquet_documents(path: str, text_field: str):
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise DataError(f"{path} is Parquet: install pyarrow (pip install pyarrow).") from error
  with open_binary(path) as f:
    table = pq.ParquetFile(f)
    if text_field not in table.schema_arrow.names:
      raise DataError(f"{path} has no column {text_field!r} (columns: "
                      f"{table.schema_arrow.names}); set config.data.text_field.")
    for batch in table.iter_batches(columns=[text_field]):  # one row group's worth at a time
      for text in batch.column(0).to_pylist():
        if text and str(text).strip():
          yield str(text)


def read_documents(patterns: str, fmt: str = "auto", text_field: str = "text") -> list[str]:
  """All documents of the matching files, in file order."""
  if fmt not in FORMATS:
    raise DataError(f"Unknown data format {fmt!r}; choose one of {FORMATS}.")
  documents: list[str] = []
  for path in resolve_paths(patterns):
    found = list(iter_documents(path, fmt, text_field))
    if not found:
      raise DataError(f"{path} contains no documents (empty file, or the wrong format/field).")
    documents += found
  return documents
