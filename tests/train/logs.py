"""Reading back what a run logged, with the readers of TensorBoard and W&B themselves."""

from __future__ import annotations

import json
import os
import pathlib
import struct
import tempfile

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from mosaics_jax import storage


def _events(path):
  """Every Event of a file (local or a bucket), through TensorBoard's loader, which checks
  each record's CRC and migrates legacy summaries as TensorBoard's own UI does."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "events.out.tfevents.copy")
    pathlib.Path(local).write_bytes(storage.path(path).read_bytes())
    yield from event_file_loader.EventFileLoader(local).Load()


def read_scalars(path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar, in order."""
  out = []
  for event in _events(path):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name == "scalars":
        out.append((event.step, value.tag, float(value.tensor.float_val[0])))
  return out


def read_histograms(path) -> list[tuple[int, str, float]]:
  """(step, tag, number of values) of every histogram."""
  return [(event.step, value.tag, float(tensor_util.make_ndarray(value.tensor)[:, 2].sum()))
          for event in _events(path) for value in event.summary.value
          if value.metadata.plugin_data.plugin_name == "histograms"]


def read_texts(path) -> dict[str, str]:
  """tag -> text of every text summary."""
  return {value.tag: value.tensor.string_val[0].decode()
          for event in _events(path) for value in event.summary.value
          if value.metadata.plugin_data.plugin_name == "text"}


_BLOCK, _HEADER = 32768, 7  # W&B's LevelDB-style log: 32 KiB blocks, 7-byte record headers
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(path: pathlib.Path):
  data = path.read_bytes()
  assert data[:4] == b":W&B", f"{path} is not a W&B run file"
  pos, chunks = _HEADER, []
  while pos + _HEADER <= len(data):
    if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
      pos += _BLOCK - pos % _BLOCK
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
    if kind == 0:  # zeros at the end of a preallocated block
      break
    chunks.append(data[pos + _HEADER:pos + _HEADER + length])
    pos += _HEADER + length
    if kind in (_FULL, _LAST):
      yield b"".join(chunks)
      chunks = []


def wandb_history(run_dir) -> list[dict]:
  """The rows ``wandb.log`` wrote to the offline run files under ``run_dir/wandb``."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=import-outside-toplevel
  rows = []
  for path in sorted(pathlib.Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb")):
    for payload in _wandb_records(path):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(payload)
      if record.WhichOneof("record_type") == "history":
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item})
  return rows
