"""Whole-document windows (``packing="whole_documents"``): a store's documents packed, in
order, into windows of at most seq_len + 1 tokens, none split across two windows (one longer
than a window is truncated to it, as v2's recipe truncates at 4k), so every window, and every
key recurrence, starts at a document start.

The packing is an index built once per (store, seq_len) from the shards' ``.docs`` offsets
(8 bytes a document; no token is read), kept in the store:

  windows-L/shard-00000.bin   int64 (start, stop) pairs, offsets in the shard: a window's
                              tokens are stream[start : stop + 1] (its documents, then the
                              next end-of-text as the last target)
  windows-L/index.json        every shard's window count and checksum; written last, so an
                              index without it is unfinished

Greedy in storage order: a window takes documents while they fit, so its padding is less than
one document. Reading window i costs one 16-byte read; memory holds the per-shard counts,
whatever the corpus size. Build it with ``python -m mosaics_jax.data.prepare --output=STORE
--whole_document_windows=L`` (raw corpora prepared into a workdir get theirs automatically).
"""

from __future__ import annotations

import bisect
import json

import numpy as np

from mosaics_jax import storage
from mosaics_jax.data import store as store_lib
from mosaics_jax.data.corpus import DataError

INDEX = "index.json"


def pack(starts: np.ndarray, length: int, seq_len: int) -> np.ndarray:
  """(n, 2) (start, stop) windows of the documents starting at ``starts`` in a stream of
  ``length`` tokens: whole documents while stop - start <= seq_len, or one truncated one."""
  ends = np.append(starts[1:], length)
  pairs, i = [], 0
  while i < len(starts):
    last = int(np.searchsorted(ends, starts[i] + seq_len, side="right")) - 1
    if last < i:  # a document longer than a window
      pairs.append((starts[i], starts[i] + seq_len))
      i += 1
    else:
      pairs.append((starts[i], ends[last]))
      i = last + 1
  return np.asarray(pairs, np.int64).reshape(-1, 2)


def directory(found: store_lib.TokenStore, seq_len: int):
  return storage.path(found.directory) / f"windows-{seq_len}"


def build(found: store_lib.TokenStore, seq_len: int) -> "WholeDocuments":
  """Write the whole-document index of ``found`` for ``seq_len`` (see the docstring)."""
  target = directory(found, seq_len)
  target.mkdir(parents=True, exist_ok=True)
  counts = []
  for shard in found.manifest["shards"]:
    docs = storage.path(found.directory) / f"{shard['name']}.docs"
    if not docs.exists():
      raise DataError(f"{docs} is missing: the store has no document offsets (an official "
                      "train.bin has none); prepare the corpus to pack whole documents.")
    starts = np.frombuffer(docs.read_bytes(), "<i8")
    pairs = pack(starts, int(shard["tokens"]), seq_len)
    storage.write_bytes(target / f"{shard['name']}.bin", pairs.astype("<i8").tobytes())
    counts.append(len(pairs))
  index = {"seq_len": seq_len, "windows": counts, "shards": _checksums(found)}
  storage.write_bytes(target / INDEX, json.dumps(index, indent=1).encode())
  return WholeDocuments.open(found, seq_len)


def _checksums(found) -> list:
  return [[s.get("sha256", ""), int(s["tokens"])] for s in found.manifest["shards"]]


class WholeDocuments:
  """The windows of a store's index: ``len()`` of them, ``window(i)`` their global (start,
  stop). Picklable (grain workers get the counts and open the shard files themselves)."""

  def __init__(self, location: str, names: list[str], shard_offsets: list[int],
               counts: list[int], pairs: np.ndarray | None = None):
    self.location, self.names = location, names
    self.shard_offsets, self.counts = shard_offsets, counts
    self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
    self.pairs = pairs  # an in-memory index (of an array), or None
    self._open: dict[int, np.ndarray] = {}

  @classmethod
  def open(cls, found: store_lib.TokenStore, seq_len: int) -> "WholeDocuments":
    path = directory(found, seq_len) / INDEX
    if not path.exists():
      raise DataError(
          f"{found.directory} has no whole-document index for seq_len {seq_len}; build it "
          f"with python -m mosaics_jax.data.prepare --output={found.directory} "
          f"--whole_document_windows={seq_len}, or choose another config.data.packing.")
    index = json.loads(path.read_text())
    if index["shards"] != _checksums(found):
      raise DataError(f"{path.parent} was built for other shards than {found.directory} now "
                      "holds; build it again (prepare --whole_document_windows).")
    names = [s["name"] for s in found.manifest["shards"]]
    offsets = [int(s["offset"]) for s in found.manifest["shards"]]
    return cls(str(path.parent), names, offsets, index["windows"])

  @classmethod
  def of_array(cls, stream: np.ndarray, eot: int, seq_len: int) -> "WholeDocuments":
    """The index of a stream in memory (documents start at each end-of-text)."""
    pairs = pack(np.flatnonzero(stream == eot), len(stream), seq_len)
    return cls("", [""], [0], [len(pairs)], pairs)

  def __len__(self) -> int:
    return self.first[-1]

  def __getstate__(self):
    return {k: getattr(self, k) for k in ("location", "names", "shard_offsets", "counts",
                                          "pairs")}

  def __setstate__(self, state):
    self.__init__(**state)

  def window(self, i: int) -> tuple[int, int]:
    shard = bisect.bisect_right(self.first, i) - 1
    local = i - self.first[shard]
    if self.pairs is not None:
      start, stop = self.pairs[local]
    elif storage.is_remote(self.location):
      with (storage.path(self.location) / f"{self.names[shard]}.bin").open("rb") as f:
        f.seek(16 * local)
        start, stop = np.frombuffer(f.read(16), "<i8")
    else:
      if shard not in self._open:
        self._open[shard] = np.memmap(storage.path(self.location) / f"{self.names[shard]}.bin",
                                      "<i8", mode="r").reshape(-1, 2)
      start, stop = self._open[shard][local]
    base = self.shard_offsets[shard]
    return base + int(start), base + int(stop)
