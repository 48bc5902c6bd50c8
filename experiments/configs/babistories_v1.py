r"""The v1 paper's language-modelling runs: Memory Mosaic v1 against GPT-2 on stories
(Figures 7 and 13), and the models its analyses read (Figure 8, Figures 14-16).

Command (the paper's setting; BabiStories files in their published format, one JSON string
per line, from github.com/facebookresearch/MemoryMosaics; TinyStories files work the same):
    python -m mosaics_jax.main --config=experiments/configs/babistories_v1.py \
        --workdir=/data/runs/babistories \
        --config.data.train_files=/data/BabiStories/traindataset.txt \
        --config.data.validation_files=/data/BabiStories/valdataset.txt
Arguments, comma-separated: ``depth=N`` (blocks of both models; Figure 13 uses 1, 4, 8, 12),
``positions`` (also train GPT-2 with RoPE and with ALiBi, for the attention analyses),
``cpu`` (2 blocks of d 128 on the TinyStories slice shipped with the package), ``tiny``
(seconds; the tests), ``pod=SLICE`` (mesh, accumulation and remat for a TPU slice or H100
nodes, e.g. ``pod=v5p-32``, ``pod=h100x64``: ``python -m experiments.layouts``,
docs/scaling.md). Then, on the workdirs:
    python -m mosaics_jax.evaluate.depth_curves --workdirs=DIR_d1,DIR_d4,... --output=OUT
    python -m mosaics_jax.evaluate.position_loss --run=DIR:mosaic --run=DIR:transformer \
        --text=../shared/data/simplewiki_turkcorpus/tune.8turkers.tok.simp --output=OUT
    python -m mosaics_jax.evaluate.attention_maps --run=DIR:mosaic --run=DIR:transformer \
        --run=DIR:transformer_rope --run=DIR:transformer_alibi \
        --text=package:tinystories/validation.txt --multiples=1,3 --output=OUT

Hardware and runtime: the paper trained on 64 GPUs (8 nodes x 8) for 80k steps of 512 x 512
tokens (21B tokens); on fewer devices add --config.optimizer.accumulation_steps to keep the
batch, and see docs/benchmarks.md for measured tokens/s per device. ``:cpu`` runs on 2 CPU
cores in a few minutes (1 min 56 s for the two models, measured 2026-11-29; ``positions``
doubles it; depth scales it).

Recipe (Library/train_memory_mosaics.py and scripts/train_babistories.sh): 12 blocks, d 768,
12 heads, 2688 persistent slots, context 512, tied embedding; AdamW betas (0.9, 0.95), weight
decay 0.1 on 2-D+ parameters, peak lr 5e-3 after 2000 linear warm-up steps, cosine to 1e-4 at
80k, gradient clip 1.0; dropout 0.05; random 512-token windows that cross stories. The
official code tokenises with tiktoken's GPT-2 BPE (50257 tokens, padded to 50304). With the
command above a SentencePiece vocabulary of 50304 is trained on the corpus instead; for the
official tokens (and numbers comparable with its validation loss), prepare the files once with
GPT-2's ranks (tiktoken's r50k_base.tiktoken, openaipublic.blob.core.windows.net/encodings/;
2 bytes a token on disk, written shard by shard) and train on the stores:
    python -m mosaics_jax.data.prepare --inputs=/data/BabiStories/traindataset.txt \
        --output=/data/babistories-gpt2/train --tokenizer=tiktoken:gpt2=/data/r50k_base.tiktoken
    python -m mosaics_jax.data.prepare --inputs=/data/BabiStories/valdataset.txt \
        --output=/data/babistories-gpt2/val --tokenizer=tiktoken:gpt2=/data/r50k_base.tiktoken
    python -m mosaics_jax.main --config=babistories_v1 --workdir=/data/runs/babistories \
        --config.data.train_files=/data/babistories-gpt2/train \
        --config.data.validation_files=/data/babistories-gpt2/val \
        --config.data.tokenizer.model_file=tiktoken:gpt2=/data/r50k_base.tiktoken
(``pip install 'mosaics_jax[tokenizers]'``; the models' vocabulary follows the tokenizer:
50257 rounded up to 50304). The official ``train.bin`` / ``val.bin`` work as they are too:
``--config.data.train_files=/data/babistories/train.bin``.

Expected result (Library/README.md and the v1 paper): validation cross-entropy about 1.50
(train 1.33) for the 12-block Memory Mosaic; GPT-2 slightly worse at every depth (Figures 7,
13), with the largest gap at 1 block; on out-of-distribution text the Memory Mosaic's loss
falls further along the context and beats GPT-2's after the first few hundred positions
(Figure 8); its memories attend to a peak of recent tokens whose width follows the leaky
coefficient, at 1x and 3x the training context, while the transformers' patterns change past
their training length (Figures 14-16). ``:cpu`` (2 blocks, d 128, 300 steps, peak learning
rates 1.2e-2 for the Memory Mosaic and 6e-3 for the transformers, as tuned in quickstart.py;
at the official 5e-3 the Memory Mosaic is still far behind after a few hundred steps):
validation loss 3.685 for the Memory Mosaic and 3.694 for GPT-2. Our small-scale numbers:
docs/results.md.
"""

from experiments import layouts
from mosaics_jax.train.config import base_config, model_section, parse_arg

DEPTHS = (1, 4, 8, 12)  # Figure 13


def get_config(arg: str = ""):
  args = parse_arg(arg, ("cpu", "tiny", "depth", "positions", "pod"), "babistories_v1")
  cpu, tiny = args.get("cpu", False), args.get("tiny", False)
  config = base_config()
  config.seed = 1337
  config.data.format = "auto"
  config.data.seq_len = 512
  config.data.batch_size = 512
  config.data.tokenizer.vocab_size = 50304
  # Unrolled: without remat the TPU compiler fuses away intermediates that a scanned stack must
  # save (v5p-32: 24.4 GiB per device unrolled, 34.7 scanned; docs/scaling.md), and 12 blocks
  # compile in minutes.
  size = dict(vocab_size=0, scan_layers=False)
  config.train.num_steps = 80000
  if cpu or tiny:
    config.data.train_files = "package:tinystories/train.txt"
    config.data.validation_files = "package:tinystories/validation.txt"
    config.data.tokenizer.vocab_size = 2048
    config.data.seq_len, config.data.batch_size, config.data.eval_batches = 128, 16, 8
    size = dict(num_layers=2, embed_dim=128, num_heads=4, context_length=128, vocab_size=0)
    # Short runs want larger peak rates than the official 5e-3 (quickstart.py's sweep at this
    # width): 1.2e-2 for the Memory Mosaic, 6e-3 for the transformers (set below).
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 1.2e-2, 60
    config.train.num_steps, config.train.log_every, config.train.eval_every = 300, 25, 100
    config.train.checkpoint_every = 100
  if tiny:
    config.data.tokenizer.vocab_size = 512
    config.data.seq_len, config.data.batch_size, config.data.eval_batches = 32, 8, 1
    size.update(num_layers=1, embed_dim=32, num_heads=2, context_length=32)
    config.train.num_steps, config.train.log_every, config.train.eval_every = 4, 2, 4
    config.optimizer.warmup_steps = 2
    config.train.checkpoint_every = 4
  if "depth" in args:
    size["num_layers"] = args["depth"]
  slots = dict(persistent_slots=int(3.5 * size["embed_dim"])) if "embed_dim" in size else {}
  config.models.mosaic = model_section("mosaic_v1_gpt2_small", **size, **slots)
  config.models.transformer = model_section("gpt2_small", **size)
  if args.get("positions"):  # the position variants of the attention analyses (Figs 14-16)
    config.models.transformer_rope = model_section("gpt2_small_rope", **size)
    config.models.transformer_alibi = model_section("gpt2_small_alibi", **size)
  if cpu:
    for name in config.models:
      if name != "mosaic":
        config.optimizer_overrides[name] = dict(learning_rate=6e-3)
  if "pod" in args:
    if cpu or tiny or "depth" in args:
      raise ValueError("babistories_v1: pod=NAME lays out the paper-scale config; drop cpu, "
                       "tiny and depth.")
    layouts.apply(config, "babistories_v1", "", args["pod"])
  config.lock()
  return config
