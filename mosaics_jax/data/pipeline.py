"""The grain pipeline every source shares: an endless, checkpointable iterator over batches."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator

import grain
from absl import flags


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
