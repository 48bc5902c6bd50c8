"""Workdirs and corpora in a bucket: a fake gs:// (in memory, no append, like GCS) end to end."""

import importlib.util
import json

import sys

import fsspec  # noqa: F401  (loads fsspec.registry)
import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from mosaics_jax import storage
from mosaics_jax.data.corpus import RESOURCES
from mosaics_jax.train import checkpoint, trainer
from tests.train.test_trainer import tiny
from tests.train import logs

registry = sys.modules["fsspec.registry"]  # the module; ``fsspec.registry`` is a read-only view


class FakeBucket(MemoryFileSystem):
  """gs:// held in memory. Like GCS: objects, no append."""

  protocol = ("gcs", "gs")
  root_marker = ""
  store: dict = {}
  pseudo_dirs = [""]
  appends_refused = 0

  def __init__(self, *args, finalize_on_close=False, **kwargs):
    del finalize_on_close  # what epath passes to gcsfs
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    for prefix in ("gs://", "gcs://"):
      path = path[len(prefix):] if path.startswith(prefix) else path
    return path.rstrip("/")

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      type(self).appends_refused += 1
      raise NotImplementedError("GCS objects cannot be appended to")
    return super()._open(path, mode, **kwargs)


@pytest.fixture
def bucket(monkeypatch):
  """gs:// served by FakeBucket for this test only."""
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("with tensorflow installed epath reads gs:// through tf.io, not fsspec")
  monkeypatch.setattr(FakeBucket, "store", {})
  monkeypatch.setattr(FakeBucket, "pseudo_dirs", [""])
  for protocol in FakeBucket.protocol:
    monkeypatch.setitem(registry._registry, protocol, FakeBucket)  # pylint: disable=protected-access
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  FakeBucket.clear_instance_cache()
  yield FakeBucket
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  FakeBucket.clear_instance_cache()


def test_files_in_a_bucket(bucket):
  storage.write_bytes("gs://runs/a/b.bin", b"whole")
  assert storage.path("gs://runs/a/b.bin").read_bytes() == b"whole"
  log = storage.GrowingFile("gs://runs/a/log.txt")
  log.write(b"one\n")
  log.write(b"two\n")
  log.close()
  again = storage.GrowingFile("gs://runs/a/log.txt")  # a resumed run keeps what was written
  again.write(b"three\n")
  assert storage.path("gs://runs/a/log.txt").read_text() == "one\ntwo\nthree\n"
  assert storage.glob("gs://runs/*/*.txt") == ["gs://runs/a/log.txt"]
  assert storage.glob("gs://runs/a/b.bin") == ["gs://runs/a/b.bin"]
  assert storage.glob("gs://runs/none/*.txt") == []
  assert bucket.appends_refused == 0


def test_training_run_in_a_bucket(bucket, tmp_path, monkeypatch):
  """Corpus, tokenizer, token caches, config, metrics, TensorBoard and report in gs://; only
  the checkpoints are redirected to local disk (orbax writes arrays with tensorstore's own GCS
  driver, which this fake cannot serve)."""
  for split in ("train", "validation"):
    storage.write_bytes(f"gs://corpora/stories/{split}.txt",
                        (RESOURCES / "tinystories" / f"{split}.txt").read_bytes())

  class LocalCheckpoints(checkpoint.Checkpoints):
    def __init__(self, directory, **kwargs):
      assert str(directory).startswith("gs://runs/")
      super().__init__(tmp_path / str(directory)[len("gs://"):], **kwargs)

  monkeypatch.setattr(checkpoint, "Checkpoints", LocalCheckpoints)
  config = tiny(**{"train.num_steps": 4, "train.log_every": 2, "train.eval_every": 0,
                   "data.train_files": "gs://corpora/stories/train*.txt",
                   "data.validation_files": "gs://corpora/*/validation.txt"})
  results = trainer.train_and_evaluate(config, "gs://runs/exp")
  assert results["mosaic"].step == 4
  run = storage.path("gs://runs/exp")
  assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == 4
  assert json.loads((run / "mosaic" / "model_config.json").read_text())["version"] == 1
  assert "| mosaic | Memory Mosaic v1 |" in (run / "report.md").read_text()
  assert (run / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
  assert len(list((run / "data").glob("tokenizer-*.model"))) == 1
  stores = sorted(str(p.parent.name) for p in (run / "data").glob("*/manifest.json"))
  assert [name.split("-")[0] for name in stores] == ["train", "validation"]
  assert len(list((run / "data").glob("train-*/shard-00000.bin"))) == 1  # read by range
  events = list((run / "mosaic").glob("events.out.tfevents.*"))
  assert {tag for _, tag, _ in logs.read_scalars(events[0])} >= {"train/loss"}

  with config.unlocked():
    config.train.num_steps = 6
  assert trainer.train_and_evaluate(config, "gs://runs/exp")["mosaic"].step == 6  # resumes
  logged = [json.loads(line)["step"]
            for line in (run / "mosaic" / "metrics.jsonl").read_text().splitlines()]
  assert [s for s in logged if s <= 4] == [1, 2, 4] and logged[-1] == 6
  assert (tmp_path / "runs/exp/mosaic/checkpoints/6").is_dir()
  assert bucket.appends_refused == 0


def test_bucket_without_its_filesystem_package_fails_clearly():
  if any(importlib.util.find_spec(m) for m in ("gcsfs", "tensorflow")):
    pytest.skip("gcsfs or tensorflow is installed")
  with pytest.raises(storage.StorageError, match="pip install gcsfs"):
    storage.path("gs://bucket/run")
  with pytest.raises(storage.StorageError, match="unsupported scheme ftp://"):
    storage.path("ftp://host/run")
