"""TensorBoard event files written directly, with no TensorFlow (or protobuf) dependency.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, payload,
masked CRC-32C of the payload), each payload an ``Event`` protocol buffer. We encode the few
fields scalars need by hand: Event{wall_time=1 (double), step=2 (int64), file_version=3
(string), summary=5}, Summary{value=1 (repeated)}, Summary.Value{tag=1, simple_value=2 (float)}.
``read_scalars`` parses them back (used by the tests).
"""

from __future__ import annotations

import os
import socket
import struct
import time

from mosaics_jax import storage


def _crc32c_table():
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, wall_time: float, summary: bytes = b"", file_version: str = "") -> bytes:
  out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
  if file_version:
    out += _field(3, file_version.encode())
  if summary:
    out += _field(5, summary)
  return out


def _scalar_value(tag: str, value: float) -> bytes:
  return _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


class EventWriter:
  """Appends scalar summaries to ``<logdir>/events.out.tfevents.<time>.<host>``."""

  def __init__(self, logdir):
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self._file = storage.GrowingFile(storage.path(logdir) / name)
    self.path = str(self._file.path)
    self._write(_event(0, time.time(), file_version="brain.Event:2"))

  def _write(self, record: bytes) -> None:
    header = struct.pack("<Q", len(record))
    self._file.write(header + struct.pack("<I", _masked_crc(header)) + record +
                     struct.pack("<I", _masked_crc(record)))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    summary = b"".join(_field(1, _scalar_value(tag, float(v))) for tag, v in values.items())
    self._write(_event(step, time.time(), summary))

  def close(self) -> None:
    self._file.close()


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, pos


def _fields(data: bytes):
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(data, pos)
    elif wire == 1:
      value, pos = data[pos:pos + 8], pos + 8
    elif wire == 5:
      value, pos = data[pos:pos + 4], pos + 4
    elif wire == 2:
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
    else:
      raise ValueError(f"unsupported wire type {wire}")
    yield number, value


def read_scalars(path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in an event file; checks every CRC."""
  out = []
  data = storage.path(path).read_bytes()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header):
      raise ValueError(f"{path}: bad length CRC at byte {pos}")
    record = data[pos + 12:pos + 12 + length]
    if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != _masked_crc(record):
      raise ValueError(f"{path}: bad data CRC at byte {pos}")
    pos += 16 + length
    step = 0
    for number, value in _fields(record):
      if number == 2:
        step = value
      elif number == 5:
        for _, summary_value in _fields(value):
          fields = dict(_fields(summary_value))
          out.append((step, fields[1].decode(), struct.unpack("<f", fields[2])[0]))
  return out
