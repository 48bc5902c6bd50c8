"""Logical axis names used by every parameter and main activation of the models.

The model code names axes; ``mosaics_jax.train.sharding`` maps names to mesh axes in one
table. ``None`` marks small axes that are always replicated (a memory count, a position table).

| name       | what                                                     |
| ---------- | -------------------------------------------------------- |
| batch      | sequences in a batch (activations only)                  |
| length     | positions in a sequence (activations only)               |
| embed      | model width d                                            |
| heads      | memory / attention heads                                 |
| head_dim   | per-head feature size                                    |
| mlp        | hidden width of a feed-forward persistent memory         |
| slots      | key/value slots of a v1 persistent memory                |
| vocab      | token vocabulary                                         |
| layers     | the blocks of a scanned stack (``models/stack.py``)      |
"""

BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
HEADS = "heads"
HEAD_DIM = "head_dim"
MLP = "mlp"
SLOTS = "slots"
VOCAB = "vocab"
LAYERS = "layers"

ALL = (BATCH, LENGTH, EMBED, HEADS, HEAD_DIM, MLP, SLOTS, VOCAB, LAYERS)

# Activation layouts.
HIDDEN = (BATCH, LENGTH, EMBED)
PER_HEAD = (BATCH, LENGTH, HEADS, HEAD_DIM)
LOGITS = (BATCH, LENGTH, VOCAB)
