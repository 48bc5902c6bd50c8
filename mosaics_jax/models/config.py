"""Model configurations: Memory Mosaics (v1 and v2) and the transformer baselines.

Configs are frozen dataclasses, so a model is a pure function of (config, params, inputs) and a
config can sit inside a jitted function. ``PRESETS`` names the configurations of both papers;
``model_config(name, **overrides)`` returns one, e.g. a tiny CPU version:

    model_config("mosaic_v2_small", num_layers=2, embed_dim=64, num_heads=4, vocab_size=256)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from mosaics_jax.kernels import slots, target

NORMS = ("layer", "rms")
POSITIONS = ("learned", "rope", "alibi", "none")
MLPS = ("gelu", "swiglu")
DTYPES = ("float32", "bfloat16", "float16")
REMATS = ("none", "dots", "block")  # layers/common.py: REMAT_POLICIES


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _check_common(config) -> None:
  """Checks shared by every model config."""
  _check(config.embed_dim % config.num_heads == 0,
         f"embed_dim={config.embed_dim} is not divisible by num_heads={config.num_heads}.")
  _check(min(config.vocab_size, config.context_length) > 0,
         "vocab_size and context_length must be positive.")
  # 0 blocks is the embedding read by the head directly (what the compile report costs apart).
  _check(config.num_layers >= 0, f"num_layers={config.num_layers}: must be 0 or more.")
  _check(config.norm in NORMS, f"norm={config.norm!r}: choose one of {NORMS}.")
  if config.dtype is not None:
    compute_dtype(config.dtype)
  _check(config.remat in REMATS, f"remat={config.remat!r}: choose one of {REMATS}.")
  _check(config.loss_chunk >= 0,
         f"loss_chunk={config.loss_chunk}: tokens per chunk, or 0 for the whole batch at once.")
  for field in dataclasses.fields(config):
    if field.name.endswith("dropout"):
      value = getattr(config, field.name)
      _check(0.0 <= value < 1.0, f"{field.name}={value}: a dropout rate must be in [0, 1).")


def compute_dtype(name: str | None) -> Any:
  """The matmul dtype: the named one, or, when None, bf16 if the target (the devices of the mesh
  being traced for, else the default backend) is a GPU or TPU and float32 on a CPU."""
  if name is None:
    return jnp.bfloat16 if target.platform() in ("gpu", "tpu") else jnp.float32
  _check(name in DTYPES, f"dtype={name!r}: choose one of {DTYPES} or None (automatic).")
  return jnp.dtype(name)


@dataclasses.dataclass(frozen=True)
class MosaicConfig:
  """A Memory Mosaic language model.

  ``version=1``: blocks of [LayerNorm -> contextual memory (leaky keys)] and [LayerNorm ->
  persistent memory (softmax over ``persistent_slots`` learned slots)], as the official code.
  ``version=2``: blocks of [norm -> short-term + long-term memory (gated keys, adaptive
  bandwidth)] and [norm -> SwiGLU persistent memory], as the v2 paper.
  Neither uses positional encodings.
  """

  version: int = 1
  vocab_size: int = 50304
  num_layers: int = 12
  embed_dim: int = 768
  num_heads: int = 12
  context_length: int = 512  # the training context; the memories have no hard length limit
  # v1 persistent memory: N slots per head (2688 = 3.5 d for GPT2-small), P memories averaged.
  persistent_slots: int = 2688
  persistent_count: int = 1
  # v1 official implementation to follow: "library" (Library/, the paper's runs) or "nano"
  # (nanoMosaics/: other bandwidth clamp, no 1/sqrt(d) logit scale, nanoGPT init).
  official_variant: str = "library"
  # v2 memories: short-term window h; long-term skip m ~ U[lo, hi] in training, fixed in eval.
  ffn_hidden_dim: int = 0
  short_term_window: int = 256
  long_term_skip_train: tuple[int, int] = (64, 256)
  long_term_skip_eval: int = 64
  short_term_memory: bool = True
  long_term_memory: bool = True
  # Shared architecture choices.
  norm: str = "layer"
  norm_eps: float = 1e-5
  use_bias: bool = False
  tie_embeddings: bool = True
  # Dropout. v1 defaults follow the paper's training code (eft): 0.05 on the persistent-memory
  # probabilities and after each memory's projection, none on contextual-memory weights
  # (the readable Library file has 0.05 there; set context_dropout=0.05 to follow it).
  context_dropout: float = 0.0
  persistent_dropout: float = 0.05
  residual_dropout: float = 0.05
  embedding_dropout: float = 0.0
  # Numerics: params are float32; dtype is the matmul dtype (None: bf16 on GPU/TPU).
  dtype: str | None = None
  retrieval_implementation: str | None = None
  # v1 slot read (kernels/slots.py): None (automatic), reference, recompute, blockwise, pallas,
  # xla or cudnn.
  persistent_implementation: str | None = None
  remat: str = "none"  # what backward recomputes: "none", "dots" or "block" (REMATS)
  scan_layers: bool = False  # one scanned block for the stack (models/stack.py)
  # Training loss: tokens per chunk of the output layer and cross-entropy, each chunk's logits
  # recomputed in the backward pass (0: all at once). Bounds the (B, T, vocab) logits.
  loss_chunk: int = 0

  def __post_init__(self):
    _check(self.version in (1, 2), f"version={self.version}: Memory Mosaics come as 1 or 2.")
    _check_common(self)
    _check(self.official_variant in ("library", "nano"),
           f"official_variant={self.official_variant!r}: choose 'library' or 'nano'.")
    if self.version == 1:
      _check(self.persistent_slots > 0 and self.persistent_count > 0,
             "persistent_slots and persistent_count must be positive for version 1.")
      _check(self.persistent_implementation in (None,) + slots.IMPLEMENTATIONS,
             f"persistent_implementation={self.persistent_implementation!r}: choose one of "
             f"{slots.IMPLEMENTATIONS} or None (automatic).")
    else:
      lo, hi = self.long_term_skip_train
      _check(self.ffn_hidden_dim > 0, "version 2 needs ffn_hidden_dim > 0 (SwiGLU width).")
      _check(self.short_term_memory or self.long_term_memory,
             "version 2 needs at least one of short_term_memory / long_term_memory.")
      _check(self.short_term_window >= 2,
             f"short_term_window={self.short_term_window}: need >= 2 to hold a pair.")
      _check(1 <= lo <= hi, f"long_term_skip_train={self.long_term_skip_train}: need 1 <= lo <= hi.")
      _check(self.long_term_skip_eval >= 1,
             f"long_term_skip_eval={self.long_term_skip_eval}: need >= 1.")

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """A decoder-only transformer baseline.

  GPT-2 (official baseline of v1): ``position="learned"``, LayerNorm, GELU MLP 4d, tied.
  Llama-style (baseline of v2): ``position="rope"``, RMSNorm, SwiGLU, untied.
  ``long_short_attention``: each block's attention split into a window of
  ``short_term_window`` tokens plus an attention that skips the most recent m tokens (m as in
  MosaicConfig), the v2 paper's Fig. 5 control.
  """

  vocab_size: int = 50304
  num_layers: int = 12
  embed_dim: int = 768
  num_heads: int = 12
  context_length: int = 512
  position: str = "learned"
  rope_theta: float = 10000.0
  norm: str = "layer"
  norm_eps: float = 1e-5
  mlp: str = "gelu"
  mlp_hidden_dim: int = 0  # 0: 4 d for GELU, the multiple of 64 nearest 8 d / 3 for SwiGLU
  use_bias: bool = False
  tie_embeddings: bool = True
  init: str = "gpt2"  # "gpt2": N(0, 0.02), residual 0.02/sqrt(2L); "v2": v2 Table 6
  long_short_attention: bool = False
  short_term_window: int = 256
  long_term_skip_train: tuple[int, int] = (64, 256)
  long_term_skip_eval: int = 64
  # nanoGPT's single dropout (0.05 in the official baseline) on embeddings, attention weights
  # and residual branches.
  embedding_dropout: float = 0.0
  attention_dropout: float = 0.0
  residual_dropout: float = 0.0
  dtype: str | None = None
  retrieval_implementation: str | None = None
  remat: str = "none"
  scan_layers: bool = False
  loss_chunk: int = 0  # as MosaicConfig's

  def __post_init__(self):
    _check_common(self)
    _check(self.position in POSITIONS, f"position={self.position!r}: choose one of {POSITIONS}.")
    _check(self.mlp in MLPS, f"mlp={self.mlp!r}: choose one of {MLPS}.")
    _check(self.init in ("gpt2", "v2"), f"init={self.init!r}: choose 'gpt2' or 'v2'.")
    _check(self.position != "rope" or self.head_dim % 2 == 0, "RoPE needs an even head_dim.")
    if self.long_short_attention:
      lo, hi = self.long_term_skip_train
      _check(1 <= lo <= hi and self.long_term_skip_eval >= 1 and self.short_term_window >= 1,
             "long_short_attention needs short_term_window >= 1 and 1 <= skips.")

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def hidden_dim(self) -> int:
    if self.mlp_hidden_dim:
      return self.mlp_hidden_dim
    if self.mlp == "gelu":
      return 4 * self.embed_dim
    return 64 * round(8 * self.embed_dim / 3 / 64)


ModelConfig = MosaicConfig | TransformerConfig

_GPT2_SMALL = dict(vocab_size=50304, num_layers=12, embed_dim=768, num_heads=12)
_LLAMA3_VOCAB = 128256
_V2_SMALL = dict(vocab_size=_LLAMA3_VOCAB, num_layers=24, embed_dim=2048, num_heads=16,
                 context_length=4096)
_V2_LARGE = dict(vocab_size=_LLAMA3_VOCAB, num_layers=32, embed_dim=4096, num_heads=32,
                 context_length=4096)
_V2 = dict(version=2, norm="rms", tie_embeddings=False, persistent_dropout=0.0,
           residual_dropout=0.0)
_LLAMA = dict(position="rope", norm="rms", mlp="swiglu", tie_embeddings=False, init="v2")
_GPT2_BASELINE = dict(position="learned", context_length=512, embedding_dropout=0.05,
                      attention_dropout=0.05, residual_dropout=0.05)

PRESETS: dict[str, ModelConfig] = {
    # v1 paper, Library/train_memory_mosaics.py defaults: 123,588,336 parameters.
    "mosaic_v1_gpt2_small": MosaicConfig(**_GPT2_SMALL, context_length=512),
    # v2 paper (section 4, Table 6): "llama-1.5B" and "llama-8B" scales.
    "mosaic_v2_small": MosaicConfig(**_V2_SMALL, **_V2, ffn_hidden_dim=6144),
    "mosaic_v2_large": MosaicConfig(**_V2_LARGE, **_V2, ffn_hidden_dim=14336),
    # v2 at GPT2-small width, for one-GPU studies (SwiGLU width 8 d / 3).
    "mosaic_v2_gpt2_small": MosaicConfig(**_GPT2_SMALL, **_V2, context_length=4096,
                                         ffn_hidden_dim=2048),
    # v1 baselines: the official GPT-2 (learned positions) and the position variants of v1
    # Figures 14-16.
    "gpt2_small": TransformerConfig(**_GPT2_SMALL, **_GPT2_BASELINE),
    "gpt2_small_rope": TransformerConfig(**_GPT2_SMALL, **{**_GPT2_BASELINE, "position": "rope"}),
    "gpt2_small_alibi": TransformerConfig(**_GPT2_SMALL,
                                          **{**_GPT2_BASELINE, "position": "alibi"}),
    # v2 baselines: Llama architecture with multi-head attention, same sizes as MMv2.
    "llama_small": TransformerConfig(**_V2_SMALL, **_LLAMA, mlp_hidden_dim=6144),
    "llama_large": TransformerConfig(**_V2_LARGE, **_LLAMA, mlp_hidden_dim=14336),
    "llama_gpt2_small": TransformerConfig(**_GPT2_SMALL, **_LLAMA, context_length=4096,
                                          mlp_hidden_dim=2048),
    # v2 Fig. 5: transformer small + long-short term attention.
    "llama_small_long_short": TransformerConfig(**_V2_SMALL, **_LLAMA, mlp_hidden_dim=6144,
                                                long_short_attention=True),
    "llama_gpt2_small_long_short": TransformerConfig(**_GPT2_SMALL, **_LLAMA,
                                                     context_length=4096, mlp_hidden_dim=2048,
                                                     long_short_attention=True),
}


def model_config(name: str, **overrides) -> ModelConfig:
  """A preset by name, with fields replaced by ``overrides``."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}.")
  base = PRESETS[name]
  unknown = set(overrides) - {field.name for field in dataclasses.fields(base)}
  if unknown:
    raise ValueError(f"{type(base).__name__} has no field(s) {sorted(unknown)}; fields: "
                     f"{', '.join(field.name for field in dataclasses.fields(base))}.")
  return dataclasses.replace(base, **overrides)


def config_to_dict(config: ModelConfig) -> dict:
  """A JSON-ready description of a model: every field, plus ``kind``."""
  kind = "mosaic" if isinstance(config, MosaicConfig) else "transformer"
  return {"kind": kind, **dataclasses.asdict(config)}


def config_from_dict(fields: dict) -> ModelConfig:
  """The inverse of ``config_to_dict`` (lists, as JSON stores tuples, become tuples)."""
  fields = dict(fields)
  classes = {"mosaic": MosaicConfig, "transformer": TransformerConfig}
  kind = fields.pop("kind", None)
  if kind not in classes:
    raise ValueError(f"kind={kind!r}: a model description needs kind 'mosaic' or 'transformer'.")
  return classes[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
