"""Text as training data: token stores, the official train.bin, raw corpora (prepared into
the workdir on first use) and documents generated in memory by the synthetic text sources
(RULER, in-context classification), all read through one batcher (``data/text.py``)."""

from __future__ import annotations

import functools

from mosaics_jax import storage
from mosaics_jax.data import (corpus, packing, pipeline, preparation, store, text,
                              tokenizer as tokenizers)
from mosaics_jax.data.corpus import DataError
from mosaics_jax.data.pipeline import Data


def text_data(config, *, seed: int, workdir: str, process_index: int = 0,
              process_count: int = 1) -> Data:
  """Text (config: the ``data`` section of an experiment): token stores made by
  ``python -m mosaics_jax.data.prepare``, the official ``train.bin`` / ``val.bin``, or raw
  corpora, which are prepared into ``workdir/data`` on first use (keyed by their files' names,
  sizes and modification times, and the tokenizer) and read from there."""
  cache = storage.path(workdir) / "data"
  tok = _tokenizer(config, cache)
  train, tok = _token_store(config.train_files, config, cache, "train", tok)
  validation, _ = _token_store(config.validation_files, config, cache, "validation", tok)
  if validation.tokenizer_hash != train.tokenizer_hash:
    raise DataError(f"The training store ({config.train_files}) and the validation store "
                    f"({config.validation_files}) were made with different tokenizers; prepare "
                    "both with the same --tokenizer.")
  return _stores_data(train, validation, config, tok, seed, process_index, process_count, cache)


def _tokenizer(config, cache) -> tokenizers.Tokenizer | None:
  """The tokenizer the config names, else the one trained for raw corpora (None when the
  data are stores: their own tokenizer, if saved with them)."""
  if config.tokenizer.model_file:
    return tokenizers.load(config.tokenizer.model_file)
  if store.is_store(config.train_files) or config.train_files.strip().endswith(".bin"):
    return None
  paths = corpus.resolve_paths(config.train_files)
  key = tokenizers.fingerprint([], files=_file_stats(paths),
                               vocab_size=config.tokenizer.vocab_size,
                               model_type=config.tokenizer.model_type, format=config.format,
                               text_field=config.text_field)
  path = cache / f"tokenizer-{key}.model"
  if path.exists():
    return tokenizers.Tokenizer.load(str(path))
  tok = tokenizers.train_tokenizer(
      preparation.sample_documents(paths, config.format, config.text_field),
      config.tokenizer.vocab_size, config.tokenizer.model_type)
  tok.save(path)  # written whole: concurrent processes never read half a file
  return tok


def _file_stats(paths: list[str]) -> list[dict]:
  """The files' names, sizes and modification times: the cache key of raw corpora (their
  text is not read to find a prepared store again)."""
  return [preparation.source_record(p) for p in paths]


def _token_store(files: str, config, cache, split: str, tok):
  """(the store of ``files``, the tokenizer) for one split (see ``text_data``)."""
  if store.is_store(files):
    found = store.TokenStore.open(files.strip())
    if tok is None:
      tok = store.saved_tokenizer(found.directory)
    if tok is not None and found.tokenizer_hash and tok.hash != found.tokenizer_hash:
      raise DataError(f"{files} was prepared with tokenizer {found.tokenizer_hash}, but "
                      f"config.data.tokenizer gives {tok.hash}; use the store's tokenizer "
                      "(its tokenizer.model) or prepare the corpus again with this one.")
    return found, tok
  if files.strip().endswith(".bin"):
    return store.TokenStore.from_bin(files.strip()), tok
  paths = corpus.resolve_paths(files)
  key = tokenizers.fingerprint([], files=_file_stats(paths), tokenizer=tok.hash,
                               format=config.format, text_field=config.text_field)
  return preparation.prepare(files, cache / f"{split}-{key}", tok, fmt=config.format,
                             text_field=config.text_field, workers=1, log=lambda _: None), tok


def _stores_data(train, validation, config, tok, seed, process_index, process_count,
                 cache) -> Data:
  train_index, validation_index = (_whole_documents(found, config, cache)
                                   for found in (train, validation))
  batches = text.WindowBatches(train, config.seq_len, config.batch_size, config.packing,
                               seed, train.eot_id, process_index, process_count, train_index)
  evaluation = text.evaluation_batches(
      validation, config.seq_len, config.batch_size, config.eval_batches, validation.eot_id,
      config.packing, process_index, process_count, validation_index)
  description = (f"{_documents(train):,} training documents ({len(train):,} tokens), "
                 f"{_documents(validation):,} validation documents ({len(validation):,} "
                 f"tokens), vocabulary {train.vocab_size:,}")
  fingerprint = tokenizers.fingerprint(
      [], tokenizer=train.tokenizer_hash, shards=[[s.get("sha256", ""), s["tokens"]]
                                                  for s in train.manifest["shards"]])
  return Data(functools.partial(pipeline.train_iterator, batches, config.num_workers),
              evaluation, train.vocab_size, tok, description, fingerprint=fingerprint)


def _whole_documents(found, config, cache) -> packing.WholeDocuments | None:
  """A store's whole-document index for ``packing="whole_documents"``: built here for the
  stores prepared into the workdir, else made by prepare (``--whole_document_windows``)."""
  if config.packing != "whole_documents":
    return None
  try:
    return packing.WholeDocuments.open(found, config.seq_len)
  except DataError:
    if not str(found.directory).startswith(str(cache)):
      raise
    return packing.build(found, config.seq_len)


def _documents(found) -> int:
  return sum(int(shard.get("documents", 0)) for shard in found.manifest["shards"])


def documents_data(train_documents: list[str], validation_documents: list[str], config, *,
                   seed: int, workdir: str, process_index: int = 0, process_count: int = 1,
                   description: str = "") -> Data:
  """Documents generated in memory by a synthetic text source: the tokenizer (trained on the
  training documents and cached in workdir/data, or loaded), then the same token stores and
  batches as text files."""
  cache = storage.path(workdir) / "data"
  tok = tokenizers.load_or_train(config.tokenizer.model_file, train_documents,
                                 config.tokenizer.vocab_size, config.tokenizer.model_type, cache)
  stores = []
  for split, documents in (("train", train_documents), ("validation", validation_documents)):
    key = tokenizers.fingerprint(documents, tokenizer=tok.hash)
    directory = cache / f"{split}-{key}"
    if not store.is_store(str(directory)):
      source = {"source": f"generated:{split}-{key}", "source_bytes": 0, "source_mtime": 0}
      shard = preparation.write_shard(documents, directory, 0, tok, source)
      preparation.write_manifest(directory, [shard], tok)
    stores.append(store.TokenStore.open(directory))
  data = _stores_data(*stores, config, tok, seed, process_index, process_count, cache)
  if description:
    data.description = f"{description}: {data.description}"
  return data
