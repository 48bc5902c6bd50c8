"""Data for training and evaluation.

Every source returns a ``Data``: a factory of endless, checkpointable iterators over this
process's training batches (one fresh iterator per model trained), a fixed list of evaluation
batches, and the vocabulary. A batch is a dict of numpy
arrays: ``inputs`` and ``targets`` (b, T) int32 (targets < 0 are ignored by the loss) and,
when documents are packed, ``segment_ids`` (b, T). Synthetic sources (three moons, RegBench)
return the same structure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator

from mosaics_jax.data import corpus, pipeline, regbench, text, tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError


@dataclasses.dataclass
class Data:
  train_iterator: Callable[[], Iterator[dict[str, Any]]]
  evaluation: list[dict[str, Any]]
  vocab_size: int
  tokenizer: tokenizers.Tokenizer | None = None
  description: str = ""
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # for evaluators


def text_data(config, *, seed: int, workdir: str, process_index: int = 0,
              process_count: int = 1) -> Data:
  """Tokenized text corpora (config: the ``data`` section of an experiment)."""
  train_documents = corpus.read_documents(config.train_files, config.format, config.text_field)
  validation_documents = corpus.read_documents(config.validation_files, config.format,
                                               config.text_field)
  cache = os.path.join(workdir, "data")
  tok = tokenizers.load_or_train(config.tokenizer.model_file, train_documents,
                                 config.tokenizer.vocab_size, config.tokenizer.model_type, cache)
  key = tokenizers.fingerprint(train_documents + ["\0"] + validation_documents,
                               tokenizer=tokenizers.fingerprint([tok.model_proto.hex()]))
  train_stream = text.encode_stream(train_documents, tok, os.path.join(cache, f"train-{key}.npy"))
  validation_stream = text.encode_stream(validation_documents, tok,
                                         os.path.join(cache, f"validation-{key}.npy"))
  batches = text.WindowBatches(train_stream, config.seq_len, config.batch_size, config.packing,
                               seed, tok.eot_id, process_index, process_count)
  evaluation = text.evaluation_batches(
      validation_stream, config.seq_len, config.batch_size, config.eval_batches, tok.eot_id,
      config.packing == "documents", process_index, process_count)
  description = (f"{len(train_documents):,} training documents ({len(train_stream):,} tokens), "
                 f"{len(validation_documents):,} validation documents "
                 f"({len(validation_stream):,} tokens), vocabulary {tok.vocab_size:,}")
  return Data(functools.partial(pipeline.train_iterator, batches, config.num_workers),
              evaluation, tok.vocab_size, tok, description)


def regbench_data(config, *, seed: int, workdir: str, process_index: int = 0,
                  process_count: int = 1) -> Data:
  """RegBench: N training automata, validation loss on held-out ones (``data/regbench.py``)."""
  del workdir
  splits = regbench.make_splits(config.regbench_train_pfas, seed, config.regbench_eval_pfas)
  batches = regbench.InstanceBatches(splits["train"].instances, config.batch_size, seed,
                                     bucket=config.regbench_bucket, process_index=process_index,
                                     process_count=process_count)
  validation = regbench.InstanceBatches(splits["validation"].instances, config.batch_size, seed,
                                        bucket=config.regbench_bucket,
                                        process_index=process_index,
                                        process_count=process_count, shuffle=False)
  count = min(config.eval_batches, len(splits["validation"].instances) // config.batch_size)
  description = (f"RegBench: {config.regbench_train_pfas:,} training automata (one instance "
                 f"each), {len(splits['test'].pfas)} test and {len(splits['validation'].pfas)} "
                 "validation automata")
  return Data(functools.partial(pipeline.train_iterator, batches, config.num_workers),
              [validation(g) for g in range(max(count, 1))], regbench.VOCAB_SIZE, None,
              description, extras={"regbench": splits, "bucket": config.regbench_bucket})


SOURCES = {"text": text_data, "regbench": regbench_data}


def build(config, **kwargs) -> Data:
  """The data of an experiment; ``config.source`` names the source."""
  if config.source not in SOURCES:
    raise DataError(f"Unknown data source {config.source!r}; choose one of {sorted(SOURCES)}.")
  return SOURCES[config.source](config, **kwargs)


__all__ = ["Data", "DataError", "SOURCES", "build", "regbench_data", "text_data"]
