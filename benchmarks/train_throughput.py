r"""Training throughput: tokens/s/device, TFLOP/s/device, MFU and peak memory of a train step.

    python benchmarks/train_throughput.py \
        --models=mosaic_v1_gpt2_small,gpt2_small --seq_len=512 --batch=16 --steps=20 --record
    python benchmarks/train_throughput.py --tiny      # a CPU smoke run (what the tests run)
    python benchmarks/train_throughput.py --models=mosaic_v2_gpt2_small --seq_len=4096 \
        --batch=1 --remat=block                       # what rematerialising each block costs

Each model is a preset of ``mosaics_jax.models`` (``--tiny`` shrinks it), trained by the same
jitted step as the trainer (``trainer.build_program``: sharded state, AdamW, donation) on
random tokens, so the input pipeline is not measured. Compilation and ``--warmup`` steps are
excluded; the timed steps end with ``block_until_ready``. FLOPs per token follow the
documented count of ``mosaics_jax.train.metrics``; MFU divides by the device's peak dense
bf16 rate (``--peak_flops`` where the device is not in the table). Dropout is off unless
``--dropout`` (weight dropout forces the unfused reference attention; v1's 5% on the slot
probabilities, the recomputing slot read: compare with ``--slot_read=recompute``).

Peak memory is what the device reports after the steps (GPU/TPU; ``n/a`` on CPU), beside the
estimate of ``mosaics_jax.train.memory`` (parameters, AdamW state, gradients and the residuals
autodiff saves; docs/scaling.md), so a long-context row shows both.

Prints a table; ``--json`` writes the rows; ``--record`` appends them, with the device, jax
version, date and command, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import flax.linen as nn
import jax
import numpy as np

from mosaics_jax import models
from mosaics_jax.train import memory, metrics, sharding, trainer
from mosaics_jax.train.config import base_config, model_section

import recording  # benchmarks/recording.py, beside this script

TINY = dict(num_layers=2, embed_dim=64, num_heads=4, vocab_size=512, persistent_slots=64,
            ffn_hidden_dim=128, mlp_hidden_dim=128, short_term_window=16,
            long_term_skip_train=(4, 16), long_term_skip_eval=4)


def _section(preset: str, args) -> tuple:
  config = models.model_config(preset)
  fields = {f.name for f in dataclasses.fields(config)}
  overrides = {k: v for k, v in TINY.items() if k in fields} if args.tiny else {}
  if not args.dropout:
    overrides.update({f: 0.0 for f in fields if f.endswith("dropout")})
  if args.dtype:
    overrides["dtype"] = args.dtype
  overrides["remat"] = args.remat
  if args.slot_read and "persistent_implementation" in fields:
    overrides["persistent_implementation"] = args.slot_read
  overrides["context_length"] = max(args.seq_len, config.context_length)
  return model_section(preset, **overrides)


def measure(preset: str, args) -> dict:
  config = base_config()
  config.data.seq_len, config.data.batch_size = args.seq_len, args.batch
  config.optimizer.warmup_steps = 1
  config.train.num_steps = 1000
  section = _section(preset, args)
  config.models[preset] = section
  config.data.tokenizer.vocab_size = section.vocab_size
  config.mesh.update(fsdp=args.fsdp, tensor=args.tensor)
  # The estimate counts T x T retrieval weights only where XLA reads the memories (CPU).
  estimate = memory.training_memory(config, preset, jax.device_count()).total(
      fused=jax.default_backend() != "cpu")
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    program = trainer.build_program(preset, section, config, section.vocab_size, mesh)
    state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, section.vocab_size, (args.batch, args.seq_len + 1), dtype=np.int32)
    batch = sharding.global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    started = time.time()
    state, step_metrics = program.train_step(state, batch)
    jax.block_until_ready(step_metrics)
    compile_seconds = time.time() - started
    for _ in range(args.warmup):
      state, step_metrics = program.train_step(state, batch)
    jax.block_until_ready(step_metrics)
    started = time.time()
    for _ in range(args.steps):
      state, step_metrics = program.train_step(state, batch)
    jax.block_until_ready(step_metrics)
    seconds = (time.time() - started) / args.steps
  tokens_per_device = args.batch * args.seq_len / seconds / jax.device_count()
  peak = metrics.device_peak_flops(override=args.peak_flops)
  stats = jax.devices()[0].memory_stats() or {}
  slot_read = section.get("persistent_implementation") if section.get("version") == 1 else None
  return dict(model=preset + (f" [{slot_read}]" if slot_read else ""),
              parameters=program.parameters, seq_len=args.seq_len,
              batch=args.batch, dtype=np.dtype(models.compute_dtype(section.dtype)).name,
              remat=args.remat, step_ms=1000 * seconds,
              tokens_per_second_per_device=tokens_per_device,
              tflops_per_device=tokens_per_device * program.flops_per_token / 1e12,
              mfu=(tokens_per_device * program.flops_per_token / peak) if peak else None,
              peak_memory_gib=(stats["peak_bytes_in_use"] / 2 ** 30
                               if "peak_bytes_in_use" in stats else None),
              estimated_memory_gib=estimate / 2 ** 30,
              compile_seconds=compile_seconds, loss=float(step_metrics["loss"]))


def table(rows: list[dict]) -> str:
  lines = ["| model | params | seq x batch | dtype | remat | step (ms) | tokens/s/device | "
           "TFLOP/s/device | MFU | peak memory (GiB) | estimated (GiB) |",
           "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
    peak = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a"
    lines.append(f"| {r['model']} | {r['parameters']:,} | {r['seq_len']} x {r['batch']} | "
                 f"{r['dtype']} | {r['remat']} | {r['step_ms']:.1f} | "
                 f"{r['tokens_per_second_per_device']:,.0f} | {r['tflops_per_device']:.3f} | "
                 f"{mfu} | {peak} | {r['estimated_memory_gib']:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="mosaic_v1_gpt2_small,mosaic_v2_gpt2_small,gpt2_small,"
                      "llama_gpt2_small")
  parser.add_argument("--seq_len", type=int, default=512)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="", help="float32 / bfloat16 (default: per backend)")
  parser.add_argument("--remat", default="none", help="none / dots / block (models' remat)")
  parser.add_argument("--fsdp", type=int, default=1)
  parser.add_argument("--tensor", type=int, default=1)
  parser.add_argument("--peak_flops", type=float, default=0.0)
  parser.add_argument("--dropout", action="store_true", help="keep the presets' dropout")
  parser.add_argument("--slot_read", default="",
                      help="v1 persistent_implementation: reference / recompute / xla / cudnn "
                           "(default: automatic)")
  parser.add_argument("--tiny", action="store_true", help="CPU-sized models, seq 64, batch 8")
  recording.add_flags(parser)
  argv = sys.argv[1:] if argv is None else argv
  args = parser.parse_args(argv)
  if args.tiny:
    args.seq_len, args.batch, args.steps = min(args.seq_len, 64), min(args.batch, 8), min(
        args.steps, 3)
  rows = [measure(preset.strip(), args) for preset in args.models.split(",") if preset.strip()]
  recording.report(rows, table(rows), args, "Training throughput", "train_throughput.py", argv,
                   recording.device(count_devices=True))
  return rows


if __name__ == "__main__":
  main()
