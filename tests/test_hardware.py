"""Accelerators by generation: slice names, topologies, device kinds, and the kernels the
target's chip takes (kernels/target.py), with faked GPU and TPU device kinds."""

import dataclasses

import jax.numpy as jnp
import pytest

from mosaics_jax import hardware
from mosaics_jax.kernels import retrieval, slots, target
from mosaics_jax.train import metrics


@pytest.mark.parametrize("slice_name, chip, devices, topology, options", [
    ("v2-8", "v2", 8, "v2:2x2", {}),  # Colab's TPU v2-8: 4 chips, 2 devices each
    ("v3-8", "v3", 8, "v3:2x2", {}),
    ("v3-32", "v3", 32, "v3:4x4", {}),
    ("v4-8", "v4", 4, "v4:2x2x1", {"chip_config_name": "megacore"}),
    ("v4-32", "v4", 16, "v4:2x2x4", {"chip_config_name": "megacore"}),
    ("v5litepod-1", "v5e", 1, "v5e:1x1", {"chips_per_host_bounds": (1, 1, 1)}),
    ("v5e-4", "v5e", 4, "v5e:2x2", {}),
    ("v5litepod-16", "v5e", 16, "v5e:4x4", {}),
    ("v5p-128", "v5p", 64, "v5p:4x4x4", {}),
    ("v6e-1", "v6e", 1, "v6e:1x1", {"chips_per_host_bounds": (1, 1, 1)}),
    ("v6e-64", "v6e", 64, "v6e:8x8", {}),
])
def test_tpu_slices_by_their_cloud_names(slice_name, chip, devices, topology, options):
  found, count = hardware.chip(slice_name)
  assert (found.name, count) == (chip, devices)
  assert hardware.tpu_topology(slice_name) == (topology, options)


def test_gpu_slices_and_bad_names():
  assert hardware.chip("h100x64")[1] == 64 and hardware.chip("t4x1")[0].compute_capability == 7.5
  with pytest.raises(ValueError, match="GPU slice"):
    hardware.tpu_topology("a100x8")
  with pytest.raises(ValueError, match="v2-8, v3-8, v4-8, v5litepod-1"):
    hardware.chip("v7-8")
  with pytest.raises(ValueError, match="TensorCores, 2 a chip"):
    hardware.chip("v4-3")
  with pytest.raises(ValueError, match="no v5p topology"):
    hardware.tpu_topology("v5p-24")
  with pytest.raises(ValueError, match="no v4 topology"):
    hardware.tpu_topology("v4-2")  # one v4 chip: no such slice


@pytest.mark.parametrize("kind, name", [
    ("TPU v2", "v2"), ("TPU v3", "v3"), ("TPU v4", "v4"), ("TPU v5 lite", "v5e"),
    ("TPU v5", "v5p"), ("TPU v6 lite", "v6e"), ("Tesla T4", "t4"), ("NVIDIA L4", "l4"),
    ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA A100-SXM4-40GB", "a100"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA A10G", "a10"),
    ("cpu", None), ("NVIDIA L40S", None),
])
def test_chips_by_device_kind(kind, name):
  found = hardware.chip_of_kind(kind)
  assert (found.name if found else None) == name


@dataclasses.dataclass
class FakeDevice:
  device_kind: str
  compute_capability: str | None = None


def fake_target(monkeypatch, platform: str, kind: str, capability: str | None = None):
  monkeypatch.setattr(target, "platform", lambda: platform)
  monkeypatch.setattr(target, "device", lambda: FakeDevice(kind, capability))


@pytest.mark.parametrize("kind, capability, expected", [
    ("Tesla T4", "7.5", "xla"),  # Colab's free GPU: no cuDNN flash attention below sm80
    ("Tesla V100-SXM2-16GB", "7.0", "xla"),
    ("NVIDIA L4", "8.9", "cudnn"),
    ("NVIDIA A100-SXM4-40GB", "8.0", "cudnn"),
    ("NVIDIA H100 80GB HBM3", "9.0", "cudnn"),
    ("NVIDIA RTX 6000 Ada", "8.9", "cudnn"),  # not in the table: its compute capability
    ("NVIDIA Quadro RTX 8000", "7.5", "xla"),
])
def test_cudnn_only_from_sm80(monkeypatch, kind, capability, expected):
  fake_target(monkeypatch, "gpu", kind, capability)
  assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256) == expected
  assert slots.resolve_implementation(None, jnp.bfloat16, 64, dropout_active=False) == (
      "cudnn" if expected == "cudnn" else "recompute")
  assert retrieval.resolve_implementation(None, jnp.float32, 64, length=256) == "xla"


@pytest.mark.parametrize("kind, computes_in", [
    ("TPU v2", jnp.float32), ("TPU v3", jnp.float32), ("TPU v4", jnp.bfloat16),
    ("TPU v5 lite", jnp.bfloat16), ("TPU v5", jnp.bfloat16), ("TPU v6 lite", jnp.bfloat16),
])
def test_splash_on_every_tpu_generation_in_a_dtype_it_compiles(monkeypatch, kind, computes_in):
  fake_target(monkeypatch, "tpu", kind)
  assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256) == "splash"
  assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=100) == "xla"
  assert target.splash_dtype(jnp.bfloat16) == computes_in
  for dropout in (False, True):  # the v1 recipe's slot dropout runs in the kernel
    assert slots.resolve_implementation(None, jnp.bfloat16, 64, dropout_active=dropout) == "pallas"
  assert target.splash_dtype(jnp.float32) == jnp.float32
  assert ("float32" in target.summary()) == (computes_in == jnp.float32)


def test_cpu_takes_blockwise_and_peak_flops_come_from_the_table(monkeypatch):
  fake_target(monkeypatch, "cpu", "cpu")
  assert retrieval.resolve_implementation(None, jnp.bfloat16, 64, length=256) == "blockwise"
  assert target.splash_dtype(jnp.bfloat16) is None and not target.cudnn_flash()
  assert metrics.device_peak_flops(FakeDevice("TPU v5 lite")) == 197e12
  assert metrics.device_peak_flops(FakeDevice("TPU v2")) == 22.5e12  # per core (a device)
  assert metrics.device_peak_flops(FakeDevice("cpu")) is None
