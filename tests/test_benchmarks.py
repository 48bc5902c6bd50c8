"""The benchmark scripts run on CPU at tiny sizes and report consistent numbers."""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import train_throughput  # noqa: E402


def test_train_throughput_tiny(tmp_path, capsys):
  out = tmp_path / "rows.json"
  markdown = tmp_path / "benchmarks.md"
  rows = train_throughput.main(["--tiny", "--models=mosaic_v1_gpt2_small,llama_gpt2_small",
                                "--remat=dots", "--dropout", "--slot_read=recompute", "--json",
                                str(out), "--record", "--markdown", str(markdown)])
  assert [r["model"] for r in rows] == ["mosaic_v1_gpt2_small [recompute]", "llama_gpt2_small"]
  for row in rows:
    assert row["step_ms"] > 0 and row["tokens_per_second_per_device"] > 0
    expected = row["tokens_per_second_per_device"] * row["step_ms"] / 1000 * 8  # 8 devices
    assert abs(expected - row["seq_len"] * row["batch"]) / (row["seq_len"] * row["batch"]) < 1e-6
    assert 3.0 < row["loss"] < 9.0
  assert json.loads(out.read_text()) == rows
  assert "| mosaic_v1_gpt2_small [recompute] |" in capsys.readouterr().out and rows[0]["remat"] == "dots"
  text = markdown.read_text()
  assert "### Training throughput" in text and "jax " in text and "--tiny" in text


import generate as generate_benchmark  # noqa: E402  (benchmarks/generate.py)


def test_generate_benchmark_tiny(tmp_path):
  markdown = tmp_path / "benchmarks.md"
  rows = generate_benchmark.main(["--tiny", "--models=mosaic_v2_gpt2_small", "--record",
                                  "--markdown", str(markdown)])
  assert [(r["model"], r["context"]) for r in rows] == [("mosaic_v2_gpt2_small", 64),
                                                         ("mosaic_v2_gpt2_small", 128)]
  for row in rows:
    assert row["cached_tokens_per_second"] > 0 and row["uncached_tokens_per_second"] > 0
    assert row["speedup"] == row["cached_tokens_per_second"] / row["uncached_tokens_per_second"]
  assert "### Generation" in markdown.read_text()


import retrieval as retrieval_benchmark  # noqa: E402  (benchmarks/retrieval.py)


def test_retrieval_benchmark_tiny(tmp_path):
  markdown = tmp_path / "benchmarks.md"
  rows = retrieval_benchmark.main(["--tiny", "--lengths=64", "--record", "--markdown",
                                   str(markdown), "--json", str(tmp_path / "rows.json")])
  paths = ["ours", "reference", "xla", "blockwise"]
  assert [(r["kind"], r["implementation"]) for r in rows] == (
      [("contextual", "ours"), ("causal", "attention")] +
      [("contextual", path) for path in paths[1:]] +
      [(kind, path) for kind in ("short_term", "long_term", "persistent") for path in paths])
  for row in rows:
    assert row["ms"] > 0 and row["tflops"] > 0
    if row["implementation"] != "attention":
      assert row["max_error"] < 1e-5  # every path reads what the reference reads
  assert json.loads((tmp_path / "rows.json").read_text()) == rows
  assert "### Retrieval op" in markdown.read_text()


import restore as restore_benchmark  # noqa: E402  (benchmarks/restore.py)


def test_restore_benchmark_tiny(tmp_path):
  rows = restore_benchmark.main(["--embed_dim=32", "--layers=1", "--slots=16", "--json",
                                 str(tmp_path / "rows.json")])
  assert [r["restore"] for r in rows] == ["parameters", "whole state"]
  assert all(r["peak_bytes"] >= r["before_bytes"] > 0 for r in rows)
  assert rows[0]["parameter_bytes"] == rows[1]["parameter_bytes"] > 0


import versus_official  # noqa: E402  (benchmarks/versus_official.py)


def test_versus_official_reads_official_weights_and_rejects_bad_shapes(tmp_path, capsys):
  """Our side of the side-by-side loads an official-layout state dict and computes that
  model's loss (the official side needs PyTorch and a checkout: run by hand, docs/benchmarks.md)."""
  import jax
  import numpy as np
  import pytest
  from mosaics_jax import convert, losses, models

  config = models.MosaicConfig(version=1, vocab_size=512, num_layers=2, embed_dim=64,
                               num_heads=4, persistent_slots=64, context_length=16,
                               dtype="float32")
  model = models.MosaicLM(config)
  params = models.init_params(model, jax.random.key(1))
  weights = tmp_path / "official.npz"
  np.savez(weights, **convert.to_state_dict(params, config))
  versus_official.main(["--worker=ours", "--official=unused", "--model=tiny", "--batch=2",
                        "--seq_len=32", "--vocab=512", f"--weights={weights}", "--steps=1",
                        "--warmup=0"])
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  data = versus_official.tokens(2, 32, 512).astype(np.int32)
  logits = model.apply({"params": params}, data[:, :-1])  # longer than context_length: fine
  assert abs(row["loss"] - float(losses.cross_entropy(logits, data[:, 1:]))) < 1e-5
  assert row["seconds"] > 0 and row["temp_gib"] > 0 and row["peak_rss_gib"] > 0
  with pytest.raises(SystemExit, match="unknown model 'big'"):
    versus_official.parse_shapes("small:4x1024,big:1x512")
  with pytest.raises(SystemExit, match="MODEL:BATCHxLENGTH"):
    versus_official.parse_shapes("small:4-1024")
