"""TensorBoard event files through tensorboardX (no TensorFlow), locally or in a bucket.

tensorboardX's ``SummaryWriter`` queues events for a background thread; we write through its
synchronous ``EventsWriter`` instead, so an event is in the file when ``scalars`` returns (a
preempted run loses nothing it logged). Buckets go through ``storage.GrowingFile`` (the same
gcsfs / s3fs paths as checkpoints and metrics.jsonl) rather than tensorboardX's own clients
(google-cloud-storage, boto3), which would be two more credentials to set up.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tensorboardX import record_writer, summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2

from mosaics_jax import storage


class _BucketFile:
  """The file object tensorboardX writes records to, on a ``GrowingFile``."""

  def __init__(self, target):
    self._file = storage.GrowingFile(target)

  def write(self, data: bytes) -> None:
    self._file.write(data)

  def flush(self) -> None:  # GrowingFile writes through at every write
    pass

  def close(self) -> None:
    self._file.close()


class _BucketFactory:

  def open(self, path):
    return _BucketFile(path)

  def directory_check(self, path):  # buckets have no directories to create
    del path


for _prefix in ("gs", "gcs", "s3"):
  record_writer.register_writer_factory(_prefix, _BucketFactory())


class EventWriter:
  """``<logdir>/events.out.tfevents.<time>.<host>.<pid>``: scalars, histograms and text, one
  event a call."""

  def __init__(self, logdir):
    logdir = str(storage.path(logdir))
    if not storage.is_remote(logdir):
      os.makedirs(logdir, exist_ok=True)
    self._writer = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}")
    self.path = self._writer._file_name  # pylint: disable=protected-access

  def _write(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    event = event_pb2.Event(wall_time=time.time(), step=int(step),
                            summary=summary_pb2.Summary(value=values))
    self._writer.write_event(event)
    self._writer.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._write(step, [summary.scalar(tag, float(v)).value[0] for tag, v in values.items()])

  def histogram(self, step: int, tag: str, values) -> None:
    self._write(step, list(summary.histogram(tag, np.asarray(values, np.float64), "auto").value))

  def text(self, tag: str, text: str, step: int = 0) -> None:
    """Shown in TensorBoard's Text tab (Markdown)."""
    self._write(step, list(summary.text(tag, text).value))

  def close(self) -> None:
    self._writer.close()
