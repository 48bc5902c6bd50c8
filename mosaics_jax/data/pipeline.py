"""What every source returns (``Data``), and the grain pipeline they share: an endless,
checkpointable iterator over batches."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Iterator

import grain
from absl import flags


@dataclasses.dataclass
class Data:
  """A source's data: training batches, evaluation batches, the vocabulary.

  A batch is a dict of numpy arrays: ``inputs`` and ``targets`` (b, T) int32 (targets < 0
  are ignored by the loss) and, when documents are packed, ``segment_ids`` (b, T)."""

  # train_iterator(start): this process's batches from global batch ``start`` on
  train_iterator: Callable[..., Iterator[dict[str, Any]]]
  evaluation: list[dict[str, Any]]
  vocab_size: int
  tokenizer: Any = None  # a data/tokenizer.py tokenizer, for text
  description: str = ""
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # for evaluators
  # What the batches are made of (store checksums, tokenizer): a checkpoint records it, and
  # resuming on other data is refused. Empty for synthetic sources (a function of the seed).
  fingerprint: str = ""


def train_iterator(batches: Callable[[int], dict[str, Any]], worker_count: int = 0,
                   start: int = 0) -> Iterator[dict[str, Any]]:
  """Batches ``batches(start)``, ``batches(start + 1)``, ...: batch g is a pure function of g
  (and the seed and data), so where training is in the data is one integer, the same on every
  host, and a run resumes on any number of hosts and workers; ``worker_count`` > 0 builds
  batches in worker processes."""
  dataset = grain.MapDataset.range(start, sys.maxsize).map(batches).to_iter_dataset()
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; notebooks never parse them
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(dataset)
