r"""RULER-style new-knowledge storage (v2 paper 5.2): Memory Mosaic v2 vs transformers, 1x-8x.

Memory Mosaic v2 against Llama-style transformers on synthetic RULER tasks, trained at one
context and evaluated at 1x-8x that context with no fine-tuning (v2 paper Table 3).

Command:
    python -m mosaics_jax.main --config=experiments/configs/ruler_v2.py --workdir=/tmp/ruler
    python -m mosaics_jax.evaluate.ruler --run=/tmp/ruler:mosaic --run=/tmp/ruler:transformer \
        --run=/tmp/ruler:transformer_long_short --multiples=1,2,4,8 --samples=50 \
        --output=/tmp/ruler/eval
Arguments: none (one GPU: GPT2-small-sized models at context 4096, as the paper's 4k), ``cpu``
(2 blocks, d 128, context 256, a few minutes on 2 CPU cores), ``tiny`` (seconds, for the
tests: two NIAH tasks at context 128).

The data (``config.data.ruler``, ``mosaics_jax/data/ruler.py``) are generated samples of the
eight tasks with their answers, one per document, 1/4 to 3/4 of the context long, packed with
document masks. The memories are scaled as the paper's (v2_paper.md section 5): short-term
window h = context / 16, long-term skip m ~ U[h/4, h] in training and h/4 at inference, for
Memory Mosaic v2 and for the transformer with long/short attention (the Fig. 5 control).

Hardware and runtime: the default is sized for one H100 (6,000 steps of 32 x 4096 tokens, 786M
tokens per model) and was not run (no GPU in this session). By the FLOP count (about 1.5
GFLOP per trained token for Memory Mosaic v2 and the long/short transformer, 1.0 for the
transformer, memories included) it takes about 3.5 hours for the three models at 25% MFU,
plus several minutes to generate the 50,000 documents and train the tokenizer on them.
``:cpu`` trains three models of 400 steps of 8 x 256 tokens in 6 min 46 s on 2 CPU cores
(measured 2026-11-29, cores shared with the test suite), and the evaluation at 1,2,4,8 with
10 samples per task takes 4 min 56 s.

Expected result (v2 paper Table 3, RULER QA, pre-trained at 4k, no fine-tuning): the RoPE
transformer fails past its training length (small: 39.4 at 4k, failure at 8k / 16k / 32k)
while MMv2 degrades gracefully (small: 45.0 / 35.0 / 34.1 / 31.7 at 4k / 8k / 16k / 32k). ``:cpu``
(10 samples per task, overall score at 1x / 2x / 4x / 8x): Memory Mosaic v2 29.7 / 27.9 /
25.2 / 25.3 (niah_single 90 at every length), Llama-style transformer 0.0 / 0.4 / 0.4 / 0.0,
with long/short attention 0.0 at every length; validation loss 1.14, 1.64, 1.62. At this
budget the transformers learn the answer format but not to copy from the context.
"""

from mosaics_jax.data import ruler
from mosaics_jax.train.config import base_config, model_section, parse_arg, scaled_v2_memories


def get_config(arg: str = ""):
  args = parse_arg(arg, ("cpu", "tiny"), "ruler_v2")
  cpu, tiny = args.get("cpu", False), args.get("tiny", False)
  if cpu and tiny:
    raise ValueError(f"ruler_v2 takes 'cpu', 'tiny' or nothing, got {arg!r}.")
  config = base_config()
  config.data.source, config.data.packing = "ruler", "documents"
  config.data.ruler = ruler.config_section(train_documents=50_000, validation_documents=1000)
  config.data.tokenizer.vocab_size = 8192  # the tasks' closed vocabulary needs no more
  config.data.seq_len, config.data.batch_size, config.data.eval_batches = 4096, 32, 10
  size = dict(vocab_size=0)
  mosaic_size, llama_size = {}, {}
  config.optimizer.learning_rate, config.optimizer.min_learning_rate = 1e-3, 1e-5
  config.optimizer.warmup_steps = 500
  config.train.num_steps, config.train.eval_every, config.train.checkpoint_every = 6000, 1000, 1000
  if cpu:
    config.data.ruler.update(train_documents=6_400, validation_documents=200)
    config.data.tokenizer.vocab_size = 2048
    config.data.seq_len, config.data.batch_size, config.data.eval_batches = 256, 8, 8
    size.update(num_layers=2, embed_dim=128, num_heads=4)
    mosaic_size, llama_size = dict(ffn_hidden_dim=384), dict(mlp_hidden_dim=384)
    config.optimizer.learning_rate, config.optimizer.min_learning_rate = 3e-3, 3e-5
    config.optimizer.warmup_steps = 50
    config.train.num_steps, config.train.log_every = 400, 100
    config.train.eval_every, config.train.checkpoint_every = 200, 200
  if tiny:
    config.data.ruler.update(tasks="niah_single,niah_multikey", train_documents=300,
                             validation_documents=20)
    config.data.tokenizer.vocab_size = 512
    config.data.seq_len, config.data.batch_size, config.data.eval_batches = 128, 8, 1
    size.update(num_layers=1, embed_dim=32, num_heads=2)
    mosaic_size, llama_size = dict(ffn_hidden_dim=64), dict(mlp_hidden_dim=64)
    config.optimizer.warmup_steps = 2
    config.train.num_steps, config.train.log_every = 4, 2
    config.train.eval_every, config.train.checkpoint_every = 4, 4
  size.update(context_length=config.data.seq_len)
  memories = scaled_v2_memories(config.data.seq_len)
  config.models.mosaic = model_section("mosaic_v2_gpt2_small", **size, **memories,
                                       **mosaic_size)
  config.models.transformer = model_section("llama_gpt2_small", **size, **llama_size)
  config.models.transformer_long_short = model_section("llama_gpt2_small_long_short", **size,
                                                       **memories, **llama_size)
  # The samples in report.md: a short needle prompt, answered greedily.
  config.report.prompts = [ruler.build_sample("niah_single", 0, 4).prompt]
  config.report.sample_tokens, config.report.temperature = 12, 0.0
  config.lock()
  return config
