"""Where a run keeps its files: a local directory or a bucket (``gs://``, ``s3://``), one API.

Paths are ``etils.epath.Path`` (orbax uses the same). A bucket holds objects, not files: no
append, no rename over an existing object, no memory map. So a log that grows is rewritten whole
at each flush (it is small: one line per log interval), a cache is written in one piece (an
object appears whole or not at all, like a local temporary file renamed over the target) and
read into memory.
"""

from __future__ import annotations

import glob as glob_lib
import importlib.util
import os

from etils import epath

# The fsspec filesystem that serves each URL scheme, and the package that provides it.
_FILESYSTEMS = {"gs": ("gcs", "gcsfs"), "s3": ("s3", "s3fs"), "az": ("az", "adlfs")}


class StorageError(ValueError):
  """A location that cannot be used; the message says why and what to install or change."""


def is_remote(location) -> bool:
  return "://" in os.fspath(location)


def path(location) -> epath.Path:
  """``location`` as a path: local ones absolute (``~`` expanded); for a bucket, checks that
  the package that reads it is installed."""
  location = os.fspath(location)
  if not is_remote(location):
    return epath.Path(os.path.abspath(os.path.expanduser(location)))
  scheme = location.split("://", 1)[0]
  if scheme not in _FILESYSTEMS:
    raise StorageError(f"{location}: unsupported scheme {scheme}://; use a local path or one of "
                       f"{', '.join(s + '://' for s in _FILESYSTEMS)}.")
  if importlib.util.find_spec("tensorflow") is None:  # else epath reads buckets through tf.io
    protocol, package = _FILESYSTEMS[scheme]
    import fsspec  # pylint: disable=import-outside-toplevel
    try:
      fsspec.get_filesystem_class(protocol)
    except ImportError as error:
      raise StorageError(f"{location}: reading {scheme}:// needs {package} ({error}); install it: "
                         f"pip install {package}") from None
  return epath.Path(location)


def write_bytes(target, data: bytes) -> None:
  """Writes ``target`` whole, so that a reader (another host, a resumed run) never sees part of
  it: locally a temporary file renamed over the target, in a bucket one object upload."""
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(target):
    target.write_bytes(data)
    return
  temporary = target.with_name(f"{target.name}.tmp{os.getpid()}")
  temporary.write_bytes(data)
  os.replace(temporary, target)


def glob(pattern: str) -> list[str]:
  """Files matching a glob, sorted; in a bucket the wildcards may be anywhere after the bucket."""
  if not is_remote(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern)))
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
  if fixed == len(parts):
    return [pattern] if path(pattern).exists() else []
  base = path(f"{scheme}://" + "/".join(parts[:fixed]))
  return sorted(str(p) for p in base.glob("/".join(parts[fixed:])))


class GrowingFile:
  """A file that only grows (metrics.jsonl, TensorBoard events), flushed at every write.
  Locally it is appended to; in a bucket, which has no append, the object is rewritten whole,
  keeping what an earlier run had written."""

  def __init__(self, target):
    self.path = path(target)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(self.path):
      self._file = None
      self._content = self.path.read_bytes() if self.path.exists() else b""
    else:
      self._file = open(self.path, "ab")  # pylint: disable=consider-using-with

  def write(self, data: bytes) -> None:
    if self._file is None:
      self._content += data
      self.path.write_bytes(self._content)
    else:
      self._file.write(data)
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
