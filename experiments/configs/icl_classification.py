r"""Many-shot in-context classification with semantic and anonymous labels (v2 paper section
5.3, Figs 3-5, and Fig. 5's long/short-attention control), on a synthetic many-class task.

Command, training then accuracy against shots:
    python -m mosaics_jax.main --config=experiments/configs/icl_classification.py \
        --workdir=/tmp/icl
    python -m mosaics_jax.evaluate.icl_classification --run=/tmp/icl:mosaic \
        --run=/tmp/icl:transformer --run=/tmp/icl:transformer_long_short \
        --shots=1,2,4,8,12 --episodes=200 --output=/tmp/icl/icl_classification
With ``:cpu``, evaluate ``--shots=1,2,3,4 --episodes=32``. Arguments: none (one GPU), ``cpu``
(minutes on 2 CPU cores), ``tiny`` (seconds, for the tests); ``classes=K`` and ``steps=S``
change the task's number of classes and the training length (``cpu,classes=4,steps=2000``: a
smaller task, trained long enough for in-context labels to have a chance).

The task (``mosaics_jax/data/icl_classification.py``): K classes, each a prototype of
characteristic words; an example is a few of its class's words, some replaced by noise words.
Semantic labels are fixed words, with fixed prototypes, learnable in the weights; anonymous
labels class_00 ... are dealt at random per episode, with fresh prototypes, so only the
demonstrations tell the classes apart. One shot is one example of every class. Training
documents are whole episodes (1 to ``max_shots`` shots, half semantic), packed by document;
the loss covers every token, so every demonstration's label is also an in-context prediction.

Models: Memory Mosaic v2, the Llama-style transformer and the same transformer with long/short
attention (Fig. 5's control), same sizes and recipe; memories scaled as in the paper
(v2_paper.md section 5): short-term window h = context / 16, long-term skip m ~ U[h/4, h] in
training and h/4 at inference (for the long/short transformer too).

Hardware and runtime: the default (GPT2-small width, 12 blocks, context 4096, 32 classes, up
to 13 shots, 5000 steps of 32 x 4096 tokens) is sized for one H100; it has not been run yet (no
GPU was available), so its runtime is not measured. ``:cpu`` (2 blocks, d 128, context 320, 8
classes, up to 4 shots, 150 steps of 8 x 320 tokens), measured 2026-11-29 on 2 CPU cores:
training the three models 2 min 0 s, the evaluation command 1 min 2 s.

Expected result (v2 paper Figs 3-5, 13-14): Memory Mosaic v2's accuracy rises monotonically
with the number of shots, for semantic and anonymous labels, while the transformer's flattens
(or degrades) as shots are added; the annotated TACRED gaps are +10.2 points (large, semantic),
+15.5 (large, anonymous), +16.7 and +12.7 (small, semantic and anonymous); long/short attention
does not close the gap (Fig. 5). The anonymous synthetic task is the faithful analogue.
``:cpu`` only learns the format and the semantic classes: validation loss 1.299 (Memory Mosaic
v2), 1.312 (transformer), 1.305 (long/short); greedy accuracy with semantic labels 91-100% for
all three at 1-4 shots, with anonymous labels 6-25%, i.e. chance (12.5%; 32 episodes per cell,
about +-6 points) for all three: 150 steps are too few for in-context learning to appear (300
steps, tried once for Memory Mosaic v2 and the transformer, still gave 12-25% at 1-4 shots).
"""

import ml_collections

from mosaics_jax.data import icl_classification as icl
from mosaics_jax.train.config import base_config, model_section, parse_arg, scaled_v2_memories


def get_config(arg: str = ""):
  args = parse_arg(arg, ("cpu", "tiny", "classes", "steps"), "icl_classification")
  cpu, tiny = args.get("cpu", False), args.get("tiny", False)
  if cpu and tiny:
    raise ValueError(f"icl_classification takes 'cpu', 'tiny' or nothing, got {arg!r}.")
  config = base_config()
  config.data.source = "icl_classification"
  config.data.packing = "documents"
  config.data.tokenizer.model_type = "bpe"  # (nearly) every word of the task is one token
  config.data.icl = ml_collections.ConfigDict(dict(
      classes=32, prototype_words=16, example_words=3, noise=0.1, vocabulary_words=1024,
      max_shots=13, semantic_fraction=0.5, train_episodes=100_000, validation_episodes=500))
  config.data.tokenizer.vocab_size = 2048
  context, steps = 4096, 5000
  config.data.batch_size, config.data.eval_batches = 32, 16
  size = dict(vocab_size=0)
  mosaic, llama = dict(), dict()
  config.optimizer.learning_rate, config.optimizer.min_learning_rate = 1e-3, 1e-5
  config.train.eval_every = config.train.checkpoint_every = 1000
  if cpu or tiny:
    config.data.icl.update(classes=8, prototype_words=8, example_words=2, vocabulary_words=128,
                           max_shots=4, train_episodes=4000, validation_episodes=100)
    config.data.tokenizer.vocab_size = 640
    context, steps = 320, 150
    config.data.batch_size, config.data.eval_batches = 8, 4
    size.update(num_layers=2, embed_dim=128, num_heads=4)
    mosaic, llama = dict(ffn_hidden_dim=384), dict(mlp_hidden_dim=384)
    config.optimizer.learning_rate, config.optimizer.min_learning_rate = 3e-3, 3e-5
    config.optimizer.warmup_steps = 20
    config.train.log_every, config.train.eval_every = 50, 100
    config.train.checkpoint_every = 100
  if tiny:
    config.data.icl.update(classes=4, prototype_words=4, vocabulary_words=40, max_shots=3,
                           train_episodes=300, validation_episodes=40)
    config.data.tokenizer.vocab_size = 448
    context, steps = 128, 4
    config.data.eval_batches = 1
    size.update(num_layers=1, embed_dim=32, num_heads=2)
    mosaic, llama = dict(ffn_hidden_dim=64), dict(mlp_hidden_dim=64)
    config.optimizer.warmup_steps = 2
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 4
  config.data.icl.classes = args.get("classes", config.data.icl.classes)
  config.data.seq_len = context
  config.train.num_steps = args.get("steps", steps)
  size.update(context_length=context, **scaled_v2_memories(context))
  config.models.mosaic = model_section("mosaic_v2_gpt2_small", **size, **mosaic)
  config.models.transformer = model_section("llama_gpt2_small", **size, **llama)
  config.models.transformer_long_short = model_section("llama_gpt2_small_long_short", **size,
                                                       **llama)
  # Samples in report.md: the models' answers to a one-shot episode of each label kind.
  task = icl.Task.from_config(config.data.icl, config.seed)
  config.report.prompts = [] if tiny else [
      task.test_episodes(kind, 1, True, 1)[0].prompt().replace("\n", " ")
      for kind in icl.LABEL_KINDS]
  config.report.sample_tokens, config.report.temperature = 3, 0.0
  config.lock()
  return config
