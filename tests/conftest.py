"""Test setup: 8 fake CPU devices (set before jax is imported), libtpu shared between processes,
and the official-code oracle."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The AOT tests (tests/test_compile.py) use libtpu's compiler in several processes at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_DIR = pathlib.Path(os.environ.get("MOSAICS_REFERENCE_DIR",
                                            REPO.parent / "shared" / "reference"))


def reference_path(name: str) -> pathlib.Path:
  """Path of an oracle file dumped from the official PyTorch code (see shared/reference).

  CI sets MOSAICS_REQUIRE_REFERENCE=1 so a missing oracle fails instead of skipping.
  """
  path = REFERENCE_DIR / name
  if not path.exists():
    if os.environ.get("MOSAICS_REQUIRE_REFERENCE") == "1":
      raise FileNotFoundError(f"Oracle {path} is missing; set MOSAICS_REFERENCE_DIR.")
    pytest.skip(f"oracle {path} not available (set MOSAICS_REFERENCE_DIR)")
  return path


@pytest.fixture(params=["tiny_v1.npz", "tiny_v1_nano.npz"])
def oracle(request):
  path = reference_path(request.param)
  with np.load(path) as data:
    return path, {name: data[name] for name in data.files}

import jax  # noqa: E402

# Faster CPU compiles for small test programs (as flax's lm1b train_test does), and a
# compilation cache shared by the tests and the command-line runs they start.
jax.config.update("jax_disable_most_optimizations", True)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # the command lines the tests start
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax"))
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_collection_modifyitems(config, items):
  """Modules with slow tests first, each module's tests kept together (its module-scoped
  fixtures are built once): pytest-xdist hands tests out in this order, so the two workers
  share the long runs at the start instead of one of them finishing alone."""
  del config
  slow = {item.module for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.module not in slow)
