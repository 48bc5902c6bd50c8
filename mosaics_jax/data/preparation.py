"""Tokenizing a corpus once into a token store (``data/store.py``), shard by shard: the
library behind ``python -m mosaics_jax.data.prepare`` and the automatic preparation of raw
corpora in ``data/text_data.py``.

Each input file becomes one shard, written whole (its record last), so a prepare that was
killed and is run again skips the finished shards and redoes the rest; memory stays at one
chunk of documents per worker; a shard's bytes depend only on its file and the tokenizer,
never on the number of workers or the runner. ``manifest.json`` is written when every shard
is done.

Runners: ``local``, a process pool on this machine; ``beam``, an Apache Beam pipeline (the
same per-shard function as a ``beam.Map``) for corpora one machine is too slow for: Dataflow,
Flink or Spark by their pipeline options, the DirectRunner by default. Beam workers write the
shards straight to the output (a bucket, for a cluster); the driver then reads their records
and writes the manifest, so a failed pipeline, rerun, also redoes only the unfinished shards.

``--tokenizer``: any ``tokenizer.load`` spec (a SentencePiece ``.model``, ``tiktoken:gpt2=PATH``,
a Hugging Face ``tokenizer.json``), or ``sentencepiece:VOCAB`` to train one
(once, on a deterministic sample of documents drawn from every input file, with all cores;
saved as ``tokenizer.model`` in the output). Training reads the store with
``--config.data.train_files=DIR`` (and ``validation_files``).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from typing import Iterable

import numpy as np

from mosaics_jax import storage
from mosaics_jax.data import corpus, store as store_lib, tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError

CHUNK = 1024  # documents tokenized at a time
SAMPLE = 300_000  # documents a SentencePiece model is trained on


def source_record(path: str) -> dict:
  """What a shard is made from: the input file's path, size and modification time."""
  stat = storage.path(path).stat()
  return {"source": path, "source_bytes": int(stat.length), "source_mtime": int(stat.mtime)}


def _finished(output, index: int, source: dict, tokenizer_hash: str) -> dict | None:
  """The record of a finished shard made from this very source with this tokenizer."""
  record_path = storage.path(output) / f"{store_lib.shard_name(index)}.json"
  if not record_path.exists():
    return None
  record = json.loads(record_path.read_text())
  same = all(record.get(k) == v for k, v in source.items())
  if not same or record.get("tokenizer_hash") != tokenizer_hash:
    return None
  binary = storage.path(output) / f"{record['name']}.bin"
  if not binary.exists() or (
      binary.stat().length != record["tokens"] * np.dtype(record["dtype"]).itemsize):
    return None
  return record


def write_shard(documents: Iterable[str], output, index: int, tokenizer, source: dict) -> dict:
  """Tokenize ``documents`` into shard ``index`` of the store at ``output``; returns its
  record. The .bin and .docs are complete before the record (.json) is written."""
  output = storage.path(output)
  output.mkdir(parents=True, exist_ok=True)
  name = store_lib.shard_name(index)
  dtype = store_lib.dtype_for(tokenizer.vocab_size)
  target = output / f"{name}.bin"
  # Locally a temporary file renamed into place (two processes preparing the same workdir
  # never see each other's half-written shard); a bucket object appears whole when closed.
  partial = target if storage.is_remote(target) else target.with_name(
      f"{name}.bin.tmp{os.getpid()}")
  digest, tokens, starts, chunk = hashlib.sha256(), 0, [], []

  def flush(f):
    nonlocal tokens
    for ids in tokenizer.encode(chunk):
      encoded = np.asarray([tokenizer.eot_id] + list(ids), dtype).tobytes()
      starts.append(tokens)
      tokens += len(ids) + 1
      digest.update(encoded)
      f.write(encoded)
    chunk.clear()

  with partial.open("wb") as f:
    for document in documents:
      chunk.append(document)
      if len(chunk) == CHUNK:
        flush(f)
    flush(f)
  if not starts:
    partial.unlink()
    raise DataError(f"{source['source']} contains no documents (empty file, or the wrong "
                    "format / text field).")
  if partial != target:
    os.replace(partial, target)
  storage.write_bytes(output / f"{name}.docs", np.asarray(starts, "<i8").tobytes())
  record = {"name": name, "dtype": dtype.str, "tokens": tokens, "documents": len(starts),
            "sha256": digest.hexdigest(), "tokenizer_hash": tokenizer.hash, **source}
  storage.write_bytes(output / f"{name}.json", json.dumps(record, indent=1).encode())
  return record


def _prepare_file(task) -> dict:
  index, path, output, tokenizer, fmt, text_field = task
  return write_shard(corpus.iter_documents(path, fmt, text_field), output, index, tokenizer,
                     source_record(path))


def write_manifest(output, records: list[dict], tokenizer) -> store_lib.TokenStore:
  offset, shards = 0, []
  for record in records:
    shards.append({"name": record["name"], "offset": offset, "tokens": record["tokens"],
                   "documents": record["documents"], "sha256": record["sha256"],
                   "source": record["source"]})
    offset += record["tokens"]
  manifest = {"format": store_lib.FORMAT, "dtype": store_lib.dtype_for(tokenizer.vocab_size).str,
              "eot_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size, "tokens": offset,
              "tokenizer": {"kind": tokenizer.kind, "hash": tokenizer.hash},
              "shards": shards}
  storage.write_bytes(storage.path(output) / store_lib.MANIFEST,
                      json.dumps(manifest, indent=1).encode())
  return store_lib.TokenStore.open(output)


def sample_documents(paths: list[str], fmt: str, text_field: str, limit: int = SAMPLE):
  """The first ``limit / len(paths)`` documents of every file, in file order: deterministic,
  and drawn from the whole corpus rather than its first files."""
  quota = max(limit // len(paths), 1)
  sample = []
  for path in paths:
    for count, document in enumerate(corpus.iter_documents(path, fmt, text_field)):
      if count == quota:
        break
      sample.append(document)
  return sample


def resolve_tokenizer(spec: str, paths: list[str], fmt: str, text_field: str, output,
                      model_type: str = "unigram"):
  """A tokenizer from ``--tokenizer``: a ``tokenizer.load`` spec, or ``sentencepiece:VOCAB``
  (trained once and saved with the store)."""
  if spec.startswith("sentencepiece:"):
    saved = store_lib.saved_tokenizer(output)
    if saved is not None:
      return saved
    try:
      vocab_size = int(spec.split(":", 1)[1])
    except ValueError as error:
      raise DataError(f"--tokenizer={spec!r}: give the vocabulary size, e.g. "
                      "sentencepiece:32000.") from error
    tokenizer = tokenizers.train_tokenizer(sample_documents(paths, fmt, text_field), vocab_size,
                                           model_type, num_threads=os.cpu_count() or 1)
    tokenizer.save(store_lib.directory_of(output) / store_lib.TOKENIZER)
    return tokenizer
  return tokenizers.load(spec)


def _run_local(todo: list[tuple], workers: int, log) -> None:
  if workers > 1 and len(todo) > 1:
    with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
      for record in pool.imap_unordered(_prepare_file, todo):
        log(f"prepare: {record['source']}: {record['tokens']:,} tokens")
  else:
    for task in todo:
      record = _prepare_file(task)
      log(f"prepare: {record['source']}: {record['tokens']:,} tokens")


def _run_beam(todo: list[tuple], pipeline_options: list[str], log) -> None:
  """One ``beam.Map(_prepare_file)`` over the unfinished shards; a reshuffle first, so a
  distributed runner spreads the shards over its workers instead of fusing them into one."""
  try:
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise DataError("--runner=beam needs Apache Beam: pip install 'mosaics_jax[beam]' (and "
                    "the runner's own extra, e.g. apache-beam[gcp] for Dataflow).") from error
  log(f"prepare: a Beam pipeline over {len(todo)} shards, options {pipeline_options or '(none)'}")
  try:
    with beam.Pipeline(options=PipelineOptions(pipeline_options)) as pipeline:
      _ = (pipeline | "shards" >> beam.Create(todo) | beam.Reshuffle()
           | "tokenize" >> beam.Map(_prepare_file))
  except DataError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    # Runners wrap a worker's exception in their own; keep its message, which names the input.
    raise DataError(f"the Beam pipeline failed: {error}\nFix the input and run the same "
                    "command again: the shards already written are kept.") from error


RUNNERS = ("local", "beam")


def prepare(inputs: str, output, tokenizer, *, fmt: str = "auto", text_field: str = "text",
            workers: int = 1, runner: str = "local", pipeline_options: list[str] = (),
            log=print) -> store_lib.TokenStore:
  """Prepare the files matching ``inputs`` into a store at ``output`` (see the docstring);
  ``workers`` for the local runner, ``pipeline_options`` (Beam's own flags) for Beam."""
  if runner not in RUNNERS:
    raise DataError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}.")
  paths = corpus.resolve_paths(inputs)
  if isinstance(tokenizer, str):
    tokenizer = resolve_tokenizer(tokenizer, paths, fmt, text_field, output)
  manifest = storage.path(output) / store_lib.MANIFEST
  if manifest.exists():
    existing = json.loads(manifest.read_text())
    if existing.get("tokenizer", {}).get("hash") != tokenizer.hash:
      raise DataError(f"{output} holds a store made with another tokenizer; choose another "
                      "--output, or delete that store to remake it.")
  records: dict[int, dict] = {}
  todo = []
  for index, path in enumerate(paths):
    done = _finished(output, index, source_record(path), tokenizer.hash)
    if done is None:
      todo.append((index, path, str(output), tokenizer, fmt, text_field))
    else:
      records[index] = done
  if records:
    log(f"prepare: {len(records)} of {len(paths)} shards already done; {len(todo)} to go")
  if todo and runner == "beam":
    _run_beam(todo, list(pipeline_options), log)
  elif todo:
    _run_local(todo, workers, log)
  for index, path, *_ in todo:  # what the workers wrote, read back as a resumed run would
    records[index] = _finished(output, index, source_record(path), tokenizer.hash)
    if records[index] is None:
      raise DataError(f"shard {index} ({path}) was not written by the {runner} runner; run "
                      "the same command again to redo it.")
  return write_manifest(output, [records[i] for i in range(len(paths))], tokenizer)
