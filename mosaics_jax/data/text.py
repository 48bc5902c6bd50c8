"""Language-model batches from a token stream, as a deterministic, checkpointable grain pipeline.

The corpus is one stream ``EOT d1 EOT d2 EOT d3 ...`` (each document preceded by the
end-of-text token, which also ends the previous one): a token store (``data/store.py``) or an
array; only the windows a batch needs are read. Three ways to cut it (``packing=``):

* ``random_windows`` (the official recipe): window i starts at a uniformly random offset drawn
  from (seed, i), with replacement, and crosses document boundaries freely.
* ``documents``: consecutive windows, reshuffled every epoch, with ``segment_ids`` that start a
  new segment at every EOT, so the memories (and attention) restart at each document.
* ``whole_documents``: windows of whole documents (``data/packing.py``: none split, one longer
  than a window truncated), reshuffled every epoch, padded at the end (targets -1), with
  ``segment_ids`` as for ``documents``: every window starts at a document start.

Batch ``g`` holds the global windows g*B .. g*B+B-1; process p reads the slice
[g*B + p*b, g*B + (p+1)*b) with b = B / process_count, which is the order in which
``jax.make_array_from_process_local_data`` lays the global batch over a data-sharded mesh.
The iterator's state is one integer (the next batch), saved with each checkpoint.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from grain.experimental import index_shuffle

from mosaics_jax.data import packing
from mosaics_jax.data.corpus import DataError

PACKINGS = ("random_windows", "documents", "whole_documents")


def with_segments(packing: str) -> bool:
  """Whether batches of ``packing`` carry segment ids (documents kept apart)."""
  return packing != "random_windows"


def encode_stream(documents, tokenizer) -> np.ndarray:
  """The token stream of a few documents in memory (the evaluators' analysis texts; training
  data go through a token store, ``data/prepare.py``)."""
  eot = tokenizer.eot_id
  pieces = [np.asarray([eot] + ids, np.int32) for ids in tokenizer.encode(documents)]
  return np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)


def segments_of(window: np.ndarray, eot: int) -> np.ndarray:
  """Segment ids of the inputs of a (..., T+1) window: a new segment at every EOT."""
  inputs = window[..., :-1]
  return (1 + np.cumsum(inputs == eot, axis=-1)).astype(np.int32)


@dataclasses.dataclass
class WindowBatches:
  """Maps a batch index to this process's slice of that global batch (picklable for workers)."""

  stream: np.ndarray
  seq_len: int
  global_batch: int
  packing: str
  seed: int
  eot: int
  process_index: int = 0
  process_count: int = 1
  documents: packing.WholeDocuments | None = None  # the index, for whole_documents

  def __post_init__(self):
    if self.packing not in PACKINGS:
      raise DataError(f"Unknown packing {self.packing!r}; choose one of {PACKINGS}.")
    if (self.packing == "whole_documents") != (self.documents is not None):
      raise ValueError("whole_documents packing, and only it, takes a documents index")
    if self.global_batch % self.process_count:
      raise DataError(f"Global batch {self.global_batch} does not split over "
                      f"{self.process_count} processes; use a multiple.")
    if len(self.stream) < self.seq_len + 2:
      raise DataError(f"The corpus has {len(self.stream)} tokens, fewer than one window of "
                      f"{self.seq_len + 1}: use more data or a shorter seq_len.")
    self.local_batch = self.global_batch // self.process_count
    self.num_windows = (len(self.documents) if self.documents is not None
                        else (len(self.stream) - 1) // self.seq_len)

  def window_start(self, index: int) -> int:
    if self.packing == "random_windows":
      high = len(self.stream) - self.seq_len - 1
      return int(np.random.default_rng([self.seed, index]).integers(0, high))
    # A permutation of the windows per epoch, computed index by index (O(1) memory whatever
    # the corpus size): grain's index_shuffle, keyed by (seed, epoch).
    epoch, position = divmod(index, self.num_windows)
    seed = int(np.random.default_rng([self.seed, epoch]).integers(0, 2**31))
    return index_shuffle(position, max_index=self.num_windows - 1, seed=seed,
                         rounds=4) * self.seq_len

  def window(self, index: int) -> np.ndarray:
    """Global window ``index``: seq_len + 1 tokens (-1 after a whole-document window's end)."""
    if self.documents is None:
      start = self.window_start(index)
      return np.asarray(self.stream[start:start + self.seq_len + 1], np.int32)
    epoch, position = divmod(index, self.num_windows)
    seed = int(np.random.default_rng([self.seed, epoch]).integers(0, 2**31))
    shuffled = index_shuffle(position, max_index=self.num_windows - 1, seed=seed, rounds=4)
    return document_window(self.stream, self.documents, shuffled, self.seq_len)

  def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
    first = batch_index * self.global_batch + self.process_index * self.local_batch
    windows = np.stack([self.window(i) for i in range(first, first + self.local_batch)])
    return batch_from_windows(windows, self.eot, with_segments(self.packing))


def document_window(stream, documents: packing.WholeDocuments, index: int,
                    seq_len: int) -> np.ndarray:
  """Whole-document window ``index`` of ``stream``, padded with -1 to seq_len + 1 tokens."""
  start, stop = documents.window(index)
  window = np.full(seq_len + 1, -1, np.int32)
  tokens = stream[start:min(stop + 1, len(stream))]
  window[:len(tokens)] = tokens
  return window


def batch_from_windows(windows: np.ndarray, eot: int, segments: bool) -> dict[str, np.ndarray]:
  """Inputs and targets of (b, T+1) windows; padding (-1) is an ignored target, and an
  end-of-text input (so it starts segments of its own, read by no real token)."""
  tokens = np.where(windows < 0, eot, windows)
  batch = {"inputs": tokens[:, :-1], "targets": windows[:, 1:]}
  if segments:
    batch["segment_ids"] = segments_of(tokens, eot)
  return batch


def evaluation_batches(stream: np.ndarray, seq_len: int, global_batch: int, num_batches: int,
                       eot: int, packing_name: str, process_index: int = 0,
                       process_count: int = 1,
                       documents: packing.WholeDocuments | None = None
                       ) -> list[dict[str, np.ndarray]]:
  """The first ``num_batches`` batches of consecutive windows of a held-out stream (this
  process's slices; whole-document windows in order, given their index); fewer when the
  stream is short, at least one."""
  local = global_batch // process_count
  segments = with_segments(packing_name)
  available = ((len(stream) - 1) // seq_len if documents is None
               else len(documents)) // global_batch
  if available < 1:
    raise DataError(f"The validation corpus has {len(stream)} tokens, less than one batch of "
                    f"{global_batch} x {seq_len + 1}: use more validation text or a smaller "
                    "batch.")
  out = []
  for g in range(min(num_batches, available)):
    first = g * global_batch + process_index * local
    if documents is None:
      windows = np.stack([stream[(first + j) * seq_len:(first + j) * seq_len + seq_len + 1]
                          for j in range(local)]).astype(np.int32)
    else:
      windows = np.stack([document_window(stream, documents, first + j, seq_len)
                          for j in range(local)])
    out.append(batch_from_windows(windows, eot, segments))
  return out
