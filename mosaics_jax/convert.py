"""Official PyTorch Memory Mosaics (v1) checkpoints in and out.

Three naming schemes exist in facebookresearch/MemoryMosaics (spec/official_code.md 2-4):
  * ``library``: ``Library/memory_mosaics/models/memory_mosaics.py`` (``blocks.0.attn.k_featurizer.conv.weight``...)
  * ``eft``: the same model with the CUDA leaky average, written by the paper's training
    script (``blocks.0.attn.leaky_average.linear.weight``, ``...leaky_beta_w_under``...)
  * ``nano``: ``nanoMosaics/mosaic_model.py`` (``mosaic.h.0.attn.k_featurizer.W_k.weight``...)

    model, params = load_official("ckpt.pt")      # or an .npz of state-dict tensors
    logits = model.apply({"params": params}, tokens)
    save_official("export.pt", params, model.config, scheme="eft")

Either layout of the blocks (``models/stack.py``): a config with ``scan_layers=True`` gets its
parameters stacked; an export reads either.

The config comes from the ``config`` argument, else from the file (an .npz ``meta/config_json``
entry, or a .pt checkpoint's ``model_args``), and whatever is missing from the tensor shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from mosaics_jax.models import MosaicConfig, MosaicLM, abstract_params, stack

SCHEMES = ("library", "eft", "nano")
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers


class CheckpointError(ValueError):
  """An official checkpoint that cannot be read or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# Tensor layouts. Ours: (C, H, d) input projections, (H, d, C) output projections, (H,) per-head
# scalars, (P, H, N, d) persistent slots. Torch: (out, in) Linear weights, (out, in, 1) Conv1d.


def _in_to_ours(w, heads):  # (H*d, C[, 1]) -> (C, H, d)
  w = w.reshape(w.shape[0], w.shape[1])
  return w.T.reshape(w.shape[1], heads, -1)


def _in_to_official(kernel, conv):
  w = kernel.reshape(kernel.shape[0], -1).T
  return w[..., None] if conv else w


def _out_to_ours(w, heads):  # (C, H*d) -> (H, d, C)
  return w.reshape(w.shape[0], heads, -1).transpose(1, 2, 0)


def _out_to_official(kernel):
  return kernel.transpose(2, 0, 1).reshape(kernel.shape[2], -1)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One parameter of ours and the official tensor(s) that hold it."""

  path: str  # ours, '/'-separated
  names: tuple[str, ...]  # official; several for stacked persistent slots
  to_ours: Callable[..., np.ndarray]
  to_official: Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _entries(scheme: str, config: MosaicConfig) -> list[_Entry]:
  heads, count = config.num_heads, config.persistent_count
  nano = scheme == "nano"

  def per_head(path, name):
    if nano:  # (1, H, 1, 1)
      return _Entry(path, (name,), lambda a: a.reshape(heads),
                    lambda p: (p.reshape(1, heads, 1, 1),))
    return _Entry(path, (name,), lambda a: a.reshape(heads), lambda p: (p,))

  def same(path, name):
    return _Entry(path, (name,), lambda a: a, lambda p: (p,))

  def projection_in(path, name, conv=False):
    entries = [_Entry(f"{path}/kernel", (f"{name}.weight",), lambda a: _in_to_ours(a, heads),
                      lambda p: (_in_to_official(p, conv),))]
    if config.use_bias:
      entries.append(_Entry(f"{path}/bias", (f"{name}.bias",), lambda a: a.reshape(heads, -1),
                            lambda p: (p.reshape(-1),)))
    return entries

  def projection_out(path, name):
    entries = [_Entry(f"{path}/kernel", (f"{name}.weight",), lambda a: _out_to_ours(a, heads),
                      lambda p: (_out_to_official(p),))]
    if config.use_bias:
      entries.append(same(f"{path}/bias", f"{name}.bias"))
    return entries

  def norm(path, name):
    entries = [same(f"{path}/scale", f"{name}.weight")]
    if config.use_bias:
      entries.append(same(f"{path}/bias", f"{name}.bias"))
    return entries

  def slots(path, names):
    if nano:
      return _Entry(path, (names,), lambda a: a[:, 0], lambda p: (p[:, None],))
    return _Entry(path, tuple(f"{names}{p}" for p in range(count)),
                  lambda *a: np.concatenate(a, axis=0),
                  lambda p: tuple(p[i:i + 1] for i in range(count)))

  embed_name, head_name, norm_name = (("mosaic.wte.weight", "lm_head.weight", "mosaic.ln_f")
                                      if nano else ("emb.weight", "head.weight", "ln_out"))
  entries = [same("token_embed/embedding", embed_name)]
  entries += norm("final_norm", norm_name)
  if not config.tie_embeddings:
    entries.append(_Entry("head/kernel", (head_name,), lambda a: a.T, lambda p: (p.T,)))

  for i in range(config.num_layers):
    ours = f"block_{i}"
    if nano:
      b = f"mosaic.h.{i}"
      memories = (("context", f"{b}.attn"), ("persistent", f"{b}.mlp"))
      entries += norm(f"{ours}/context_norm", f"{b}.ln_1")
      entries += norm(f"{ours}/persistent_norm", f"{b}.ln_2")
      for mine, theirs in memories:
        fe = f"{theirs}.k_featurizer"
        entries += projection_in(f"{ours}/{mine}/keys/proj", f"{fe}.W_k")
        entries.append(per_head(f"{ours}/{mine}/keys/leak", f"{fe}.leaky_avg.leaky_key_beta"))
        entries.append(per_head(f"{ours}/{mine}/key_scale", f"{fe}.key_scale"))
        entries += projection_out(f"{ours}/{mine}/out", f"{theirs}.c_proj")
      c = f"{b}.attn.v_featurizer"
      entries += projection_in(f"{ours}/context/values/proj", f"{c}.W_v")
      entries.append(per_head(f"{ours}/context/values/mix", f"{c}.coef"))
      entries.append(per_head(f"{ours}/context/value_scale", f"{c}.val_scale"))
      entries.append(slots(f"{ours}/persistent/slot_keys", f"{b}.mlp.P_k"))
      entries.append(slots(f"{ours}/persistent/slot_values", f"{b}.mlp.P_v"))
      entries.append(per_head(f"{ours}/persistent/value_scale", f"{b}.mlp.out_scale"))
      continue

    b = f"blocks.{i}"
    entries += norm(f"{ours}/context_norm", f"{b}.ln1")
    entries += norm(f"{ours}/persistent_norm", f"{b}.ln2")
    for mine, theirs in (("context", f"{b}.attn"), ("persistent", f"{b}.pmem")):
      if scheme == "eft":
        leaky = f"{theirs}.leaky_average"
        entries += projection_in(f"{ours}/{mine}/keys/proj", f"{leaky}.linear")
        # One Parameter registered under two names (sep_w_on_t=False): read w, write both.
        entries.append(_Entry(f"{ours}/{mine}/keys/leak", (f"{leaky}.leaky_beta_w_under",),
                              lambda a: a.reshape(heads), lambda p: (p,)))
      else:
        entries += projection_in(f"{ours}/{mine}/keys/proj", f"{theirs}.k_featurizer.conv",
                                 conv=True)
        entries.append(per_head(f"{ours}/{mine}/keys/leak", f"{theirs}.leaky_key_beta"))
      entries.append(per_head(f"{ours}/{mine}/key_scale", f"{theirs}.kernel_beta"))
      entries.append(per_head(f"{ours}/{mine}/value_scale", f"{theirs}.value_beta"))
      entries += projection_out(f"{ours}/{mine}/out", f"{theirs}.c_proj")
    entries += projection_in(f"{ours}/context/values/proj", f"{b}.attn.v_featurizer.linear")
    entries.append(per_head(f"{ours}/context/values/mix", f"{b}.attn.v_featurizer.coef"))
    entries.append(slots(f"{ours}/persistent/slot_keys", f"{b}.pmem.pmem.M_k"))
    entries.append(slots(f"{ours}/persistent/slot_values", f"{b}.pmem.pmem.M_v"))
  return entries


# ---------------------------------------------------------------------------------------------
# Reading.


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for name, value in state.items():
    for prefix in _PREFIXES:
      if name.startswith(prefix):
        name = name[len(prefix):]
    out[name] = value
  return out


def detect_scheme(state: Mapping[str, Any]) -> str:
  """Which official implementation wrote a state dict."""
  if "mosaic.wte.weight" in state:
    return "nano"
  if any(".leaky_average." in name for name in state):
    return "eft"
  if "emb.weight" in state and any(".k_featurizer.conv.weight" in name for name in state):
    return "library"
  raise CheckpointError(
      "Not an official Memory Mosaics v1 state dict: expected 'emb.weight' with "
      "'blocks.N.attn.k_featurizer.conv.weight' (Library), '...leaky_average.linear.weight' "
      f"(eft) or 'mosaic.wte.weight' (nanoMosaics); found e.g. {sorted(state)[:5]}.")


def _read_file(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """State-dict arrays and the official arguments found in a .pt or .npz file."""
  if not os.path.exists(path):
    raise CheckpointError(f"No checkpoint at {path!r}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      names = list(data.files)
      prefixed = any(name.startswith("param/") for name in names)
      state = {name.removeprefix("param/"): data[name] for name in names
               if name.startswith("param/") or not (prefixed or name.startswith("meta/"))}
      args = json.loads(str(data["meta/config_json"])) if "meta/config_json" in names else {}
    return state, args
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise CheckpointError(
        f"Reading {path!r} needs PyTorch (pip install 'mosaics_jax[torch]'), or convert it to "
        "an .npz of state-dict tensors first.") from error
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for corrupt or unsafe files
    raise CheckpointError(f"torch.load({path!r}, weights_only=True) failed: {error}") from error
  args = {}
  if isinstance(checkpoint, Mapping) and "model" in checkpoint:
    args = dict(checkpoint.get("model_args") or {})
    checkpoint = checkpoint["model"]
  if not isinstance(checkpoint, Mapping):
    raise CheckpointError(f"{path!r} holds a {type(checkpoint).__name__}, not a state dict or a "
                          "training checkpoint with a 'model' entry.")
  state = {name: value.detach().to(torch.float32).numpy() if value.is_floating_point()
           else value.numpy() for name, value in checkpoint.items()}
  return state, args


def infer_config(state: Mapping[str, np.ndarray], args: Mapping[str, Any] | None = None,
                 scheme: str | None = None) -> MosaicConfig:
  """A ``MosaicConfig`` from official arguments (``model_args`` / the oracle's config JSON) and
  the tensor shapes."""
  args = dict(args or {})
  scheme = scheme or detect_scheme(state)
  for option, supported in (("attn_only", False), ("pre_ln", True), ("k_kernel_size", 1),
                            ("v_kernel_size", 2), ("v_shift", 1), ("k_fe_type", "linearconv"),
                            ("v_fe_type", "lowrlinearconv"), ("v_leaky", False)):
    if option in args and args[option] != supported:
      raise CheckpointError(f"The checkpoint uses {option}={args[option]!r}; mosaics_jax "
                            f"implements the paper's {option}={supported!r} only.")
  nano = scheme == "nano"
  embed = state["mosaic.wte.weight" if nano else "emb.weight"]
  vocab_size, width = embed.shape
  block_prefix = "mosaic.h." if nano else "blocks."
  layers = len({name[len(block_prefix):].split(".")[0] for name in state
                if name.startswith(block_prefix)})
  if nano:
    heads = state["mosaic.h.0.attn.k_featurizer.key_scale"].size
    slots = state["mosaic.h.0.mlp.P_k"]
    count, slot_count = slots.shape[0], slots.shape[3]
    context = state.get("mosaic.h.0.attn.k_featurizer.leaky_avg.coef", np.zeros((0, 0))).shape[0]
    tied = True
    bias = "mosaic.ln_f.bias" in state
    dropout = dict(context_dropout=args.get("dropout", 0.0), persistent_dropout=args.get("dropout", 0.0),
                   residual_dropout=args.get("dropout", 0.0), embedding_dropout=args.get("dropout", 0.0))
  else:
    heads = state["blocks.0.attn.kernel_beta"].size
    count = len([n for n in state if n.startswith("blocks.0.pmem.pmem.M_k")])
    slot_count = state["blocks.0.pmem.pmem.M_k0"].shape[2]
    context = 0
    tied = "head.weight" not in state or bool(np.array_equal(state["head.weight"], embed))
    bias = "ln_out.bias" in state
    ic = args.get("ic_dropout", args.get("dropout", 0.05))
    hd = args.get("hd_dropout", args.get("dropout", 0.05))
    # eft (the paper's training code) has no contextual-weight dropout; the naive file does.
    dropout = dict(context_dropout=0.0 if scheme == "eft" else ic, persistent_dropout=ic,
                   residual_dropout=hd)
  conv = state.get("blocks.0.attn.k_featurizer.conv.weight")
  if conv is not None and conv.shape[-1] != 1:
    raise CheckpointError(f"Key convolution of width {conv.shape[-1]}: mosaics_jax implements "
                          "the paper's width-1 key projection only.")
  context_length = int(args.get("block_size") or context or 512)
  return MosaicConfig(
      version=1, vocab_size=int(args.get("vocab_size", vocab_size)), num_layers=layers,
      embed_dim=width, num_heads=int(heads), context_length=context_length,
      persistent_slots=int(slot_count), persistent_count=int(count),
      official_variant="nano" if nano else "library", use_bias=bool(bias),
      tie_embeddings=tied, **dropout)


def _flatten(tree, prefix=""):
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else key
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def _unflatten(flat):
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def from_state_dict(state: Mapping[str, np.ndarray], config: MosaicConfig,
                    scheme: str | None = None):
  """Our parameter tree from an official state dict (numpy arrays)."""
  state = _strip_prefixes(state)
  scheme = scheme or detect_scheme(state)
  expected = _flatten(abstract_params(MosaicLM(dataclasses.replace(config, scan_layers=False))))
  flat = {}
  for entry in _entries(scheme, config):
    missing = [name for name in entry.names if name not in state]
    if missing:
      raise CheckpointError(f"The {scheme} state dict lacks {missing} (for our {entry.path}); "
                            "check the scheme and the config (layers, bias, persistent_count).")
    value = np.asarray(entry.to_ours(*(np.asarray(state[n], np.float32) for n in entry.names)))
    if value.shape != expected[entry.path].shape:
      raise CheckpointError(f"{entry.names[0]} gives {entry.path} shape {value.shape}, but the "
                            f"config expects {expected[entry.path].shape}.")
    flat[entry.path] = value
  if set(flat) != set(expected):
    raise CheckpointError(f"Parameters not covered by the {scheme} mapping: "
                          f"{sorted(set(expected) - set(flat))}.")
  return stack.to_layout(_unflatten(flat), scanned=config.scan_layers)


def load_official(path: str, config: MosaicConfig | None = None):
  """Load an official v1 checkpoint (.pt, or .npz of state-dict tensors) as ``(model, params)``."""
  state, args = _read_file(path)
  state = _strip_prefixes(state)
  scheme = detect_scheme(state)
  config = config or infer_config(state, args, scheme)
  return MosaicLM(config), from_state_dict(state, config, scheme)


# ---------------------------------------------------------------------------------------------
# Writing.


def _nano_buffers(config: MosaicConfig) -> dict[str, np.ndarray]:
  """The buffers nanoMosaics keeps in its state dict (its strict load requires them)."""
  n = config.context_length
  lag = np.arange(n)[:, None] - np.arange(n)[None, :]
  coef = np.where(lag >= 0, -lag, 0).astype(np.float32)
  causal = np.tril(np.ones((n, n), bool), k=-1)[None, None]
  out = {}
  for i in range(config.num_layers):
    out[f"mosaic.h.{i}.attn.bias"] = causal
    for memory in ("attn", "mlp"):
      out[f"mosaic.h.{i}.{memory}.k_featurizer.leaky_avg.coef"] = coef
  return out


def to_state_dict(params, config: MosaicConfig, scheme: str = "library") -> dict[str, np.ndarray]:
  """An official state dict (numpy arrays) that ``load_state_dict`` of ``scheme`` accepts."""
  if scheme not in SCHEMES:
    raise ValueError(f"Unknown scheme {scheme!r}; choose one of {SCHEMES}.")
  if config.version != 1:
    raise ValueError("Only Memory Mosaics v1 has an official implementation to export to.")
  if scheme == "nano" and not config.tie_embeddings:
    raise ValueError("nanoMosaics always ties its embedding; this model is untied.")
  flat = {path: np.asarray(value, np.float32)
          for path, value in _flatten(stack.to_layout(params, scanned=False)).items()}
  state = {}
  for entry in _entries(scheme, config):
    for name, value in zip(entry.names, entry.to_official(flat[entry.path])):
      state[name] = np.ascontiguousarray(value)
  if config.tie_embeddings:
    embed = state["mosaic.wte.weight" if scheme == "nano" else "emb.weight"]
    state["lm_head.weight" if scheme == "nano" else "head.weight"] = embed
  if scheme == "eft":
    for name in [n for n in state if n.endswith("leaky_beta_w_under")]:
      state[name.replace("_w_under", "_u_under")] = state[name]
  if scheme == "nano":
    state.update(_nano_buffers(config))
  return state


def official_args(config: MosaicConfig) -> dict[str, Any]:
  """Constructor arguments of the official model for this config (``model_args``)."""
  return dict(vocab_size=config.vocab_size, n_layer=config.num_layers, n_head=config.num_heads,
              n_embd=config.embed_dim, block_size=config.context_length,
              pmem_size=config.persistent_slots, pmem_count=config.persistent_count,
              bias=config.use_bias, weight_tying=config.tie_embeddings,
              ic_dropout=config.persistent_dropout, hd_dropout=config.residual_dropout,
              dropout=config.residual_dropout)


def save_official(path: str, params, config: MosaicConfig, scheme: str = "library") -> None:
  """Write an official checkpoint: ``.pt`` ({'model': state_dict, 'model_args': ...}, needs
  torch) or ``.npz`` (``param/<name>`` tensors and ``meta/config_json``)."""
  state = to_state_dict(params, config, scheme)
  args = official_args(config)
  if path.endswith(".npz"):
    np.savez(path, **{f"param/{k}": v for k, v in state.items()},
             **{"meta/config_json": np.asarray(json.dumps({**args, "impl": scheme}))})
    return
  import torch  # pylint: disable=import-outside-toplevel

  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "model_args": args},
             path)
