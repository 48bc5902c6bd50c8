"""The grain pipeline every source shares: an endless, checkpointable iterator over batches."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterator

import grain
from absl import flags


def train_iterator(batches: Callable[[int], dict[str, Any]],
                   worker_count: int = 0) -> Iterator[dict[str, Any]]:
  """Batch g is ``batches(g)`` (deterministic), so the iterator's state is one integer, saved with
  every checkpoint; ``worker_count`` > 0 builds batches in worker processes."""
  dataset = grain.MapDataset.range(sys.maxsize).map(batches).to_iter_dataset()
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; notebooks never parse them
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(dataset)
