"""Token stores: a corpus tokenized once (``data/prepare.py``), read window by window.

A store is a directory, on a local disk or in a bucket:

  manifest.json       the shards in order with their cumulative token offsets, the dtype, the
                      end-of-text id, the vocabulary size and the tokenizer's hash
  shard-00000.bin     one input file's tokens, little-endian uint16 (uint32 for vocabularies
                      over 65,536), an end-of-text token before every document
  shard-00000.docs    int64 offsets of its documents' first tokens (their end-of-text)
  shard-00000.json    the shard's record (source file, its size, token and document counts,
                      SHA-256 of the .bin); written last, so a shard without it is unfinished

Concatenated, the shards are the stream ``EOT d1 EOT d2 ...`` the batchers cut windows from.
Reading holds the manifest only: a window is a memory-mapped slice of a local shard, or a
ranged read from a bucket, so opening a store costs the same for a million tokens as for a
trillion. The official recipe's ``train.bin`` / ``val.bin`` (uint16 GPT-2 tokens, no
manifest) open as one-shard stores (``TokenStore.from_bin``).
"""

from __future__ import annotations

import bisect
import hashlib
import json

import numpy as np

from mosaics_jax import storage
from mosaics_jax.data import tokenizer as tokenizers
from mosaics_jax.data.corpus import DataError

FORMAT = "mosaics_jax.token_store.v1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"  # the SentencePiece model prepare trained, saved with its store


def dtype_for(vocab_size: int) -> np.dtype:
  return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(index: int) -> str:
  return f"shard-{index:05d}"


def directory_of(location):
  """The directory of a store given as its directory or its manifest."""
  path = storage.path(location.strip() if isinstance(location, str) else location)
  return path.parent if path.name == MANIFEST else path


def saved_tokenizer(location):
  """The tokenizer saved with the store at ``location`` (``prepare
  --tokenizer=sentencepiece:VOCAB``), or None."""
  path = directory_of(location) / TOKENIZER
  return tokenizers.Tokenizer.load(str(path)) if path.exists() else None


def is_store(location: str) -> bool:
  """Whether ``location`` is a store directory (or its manifest)."""
  location = location.strip()
  if "," in location or any(c in location for c in "*?["):
    return False
  path = storage.path(location)
  return path.name == MANIFEST and path.exists() or (path / MANIFEST).exists()


class TokenStore:
  """The token stream of a store: ``len(store)`` tokens, ``store[a:b]`` a numpy array.

  Picklable (grain workers receive the manifest, and open the shards themselves)."""

  def __init__(self, directory, manifest: dict):
    self.directory = str(directory)
    self.manifest = manifest
    self.dtype = np.dtype(manifest["dtype"])
    self.eot_id = int(manifest["eot_id"])
    self.vocab_size = int(manifest["vocab_size"])
    self.tokenizer_hash = manifest.get("tokenizer", {}).get("hash", "")
    self._names = [shard["name"] for shard in manifest["shards"]]
    self._offsets = [int(shard["offset"]) for shard in manifest["shards"]]
    self._length = int(manifest["tokens"])
    self._open: dict[int, np.ndarray] = {}

  @classmethod
  def open(cls, location) -> "TokenStore":
    directory = directory_of(location)
    try:
      manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError as error:
      raise DataError(f"{directory} has no {MANIFEST}: not a token store, or its prepare did "
                      "not finish; run python -m mosaics_jax.data.prepare again.") from error
    except ValueError as error:
      raise DataError(f"{directory / MANIFEST} is not valid JSON ({error}); rerun prepare.") \
          from error
    if manifest.get("format") != FORMAT:
      raise DataError(f"{directory / MANIFEST} is format {manifest.get('format')!r}, not "
                      f"{FORMAT!r}; prepare it again with this version.")
    store = cls(directory, manifest)
    if store.vocab_size > np.iinfo(store.dtype).max + 1:
      raise DataError(f"{directory / MANIFEST}: a vocabulary of {store.vocab_size:,} does not fit "
                      f"its dtype {store.dtype.name}; the store is damaged, prepare it again.")
    store.check_sizes()
    return store

  @classmethod
  def from_bin(cls, path, eot_id: int = 50256, vocab_size: int = 50304) -> "TokenStore":
    """An official ``train.bin`` (uint16 tokens, GPT-2's end-of-text 50256) as a store."""
    file = storage.path(path)
    if not file.exists():
      raise DataError(f"{path} does not exist.")
    size = file.stat().length
    if size % 2:
      raise DataError(f"{path} has an odd number of bytes ({size}): not a uint16 token file.")
    manifest = {"format": FORMAT, "dtype": "<u2", "eot_id": eot_id, "vocab_size": vocab_size,
                "tokens": size // 2, "tokenizer": {"kind": "official train.bin", "hash": ""},
                "shards": [{"name": file.name[:-len(".bin")], "offset": 0, "tokens": size // 2}]}
    return cls(file.parent, manifest)

  def __len__(self) -> int:
    return self._length

  def __getstate__(self):
    return {"directory": self.directory, "manifest": self.manifest}

  def __setstate__(self, state):
    self.__init__(state["directory"], state["manifest"])

  def _path(self, index: int):
    return storage.path(self.directory) / f"{self._names[index]}.bin"

  def check_sizes(self) -> None:
    """Every shard is there with the size the manifest gives (one stat each, no reading)."""
    ends = self._offsets[1:] + [self._length]
    for index, (start, end) in enumerate(zip(self._offsets, ends)):
      path = self._path(index)
      if not path.exists():
        raise DataError(f"Shard {path} of the store is missing; restore it or rerun prepare.")
      size = path.stat().length
      if size != (end - start) * self.dtype.itemsize:
        raise DataError(f"Shard {path} has {size} bytes, the manifest says "
                        f"{(end - start) * self.dtype.itemsize}: it is truncated or from "
                        "another prepare; rerun prepare.")

  def verify(self) -> None:
    """Every shard's SHA-256 against the manifest (reads the whole store: prepare --verify)."""
    for index, shard in enumerate(self.manifest["shards"]):
      if not shard.get("sha256"):
        continue
      digest = hashlib.sha256()
      with self._path(index).open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
          digest.update(block)
      if digest.hexdigest() != shard["sha256"]:
        raise DataError(f"Shard {self._path(index)} does not match its checksum in the manifest "
                        "(changed or damaged since it was prepared); delete it and its .json, "
                        "then rerun prepare to remake it.")

  def _shard(self, index: int) -> np.ndarray | None:
    """A local shard, memory-mapped once (None for a bucket: read by range)."""
    if storage.is_remote(self.directory):
      return None
    if index not in self._open:
      self._open[index] = np.memmap(self._path(index), self.dtype, mode="r")
    return self._open[index]

  def _read(self, index: int, start: int, stop: int) -> np.ndarray:
    shard = self._shard(index)
    if shard is not None:
      return np.asarray(shard[start:stop])
    with self._path(index).open("rb") as f:
      f.seek(start * self.dtype.itemsize)
      return np.frombuffer(f.read((stop - start) * self.dtype.itemsize), self.dtype)

  def __getitem__(self, item: slice) -> np.ndarray:
    if not isinstance(item, slice) or item.step not in (None, 1):
      raise TypeError("a token store reads contiguous slices: store[start:stop]")
    start, stop, _ = item.indices(self._length)
    pieces = []
    index = max(bisect.bisect_right(self._offsets, start) - 1, 0)
    while start < stop:
      end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._length
      take = min(stop, end)
      if take > start:
        base = self._offsets[index]
        pieces.append(self._read(index, start - base, take - base))
      start, index = take, index + 1
    return np.concatenate(pieces) if pieces else np.zeros((0,), self.dtype)
