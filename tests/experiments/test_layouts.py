"""Pod layouts: consistent with their slices and batches, and (for two of them, recomputed) as
documented in docs/scaling.md and within the device's memory."""

import pathlib

import pytest

from experiments import layouts, registry
from mosaics_jax.models.config import REMATS
from mosaics_jax.train import sharding

SCALING = pathlib.Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
ALL = [(experiment, size, slice_name) for (experiment, size), known in layouts.LAYOUTS.items()
       for slice_name in known]


@pytest.mark.parametrize("experiment, size, slice_name", ALL)
def test_layout_fills_its_slice_and_keeps_the_papers_batch(experiment, size, slice_name):
  _, devices = layouts.accelerator(slice_name)
  config = registry.get_config(experiment, ",".join(filter(None, [size, f"pod={slice_name}"])))
  paper = registry.get_config(experiment, size)
  assert config.data.batch_size == paper.data.batch_size
  mesh = sharding.mesh_shape(config.mesh, devices)
  assert mesh == (config.mesh.data, config.mesh.fsdp, 1)
  assert config.data.batch_size % (mesh[0] * mesh[1] * config.optimizer.accumulation_steps) == 0
  assert {section.remat for section in config.models.values()} <= set(REMATS)
  documented = [row for row in SCALING.read_text().splitlines()
                if row.startswith(f"| {experiment}:{size or '-'} | {slice_name} | {devices} |")]
  assert len(documented) == len(config.models), "python -m experiments.layouts > docs"
  for row in documented:  # the last column: the share of the device's memory
    assert int(row.split("|")[-2].strip().rstrip("%")) <= 100 * layouts.MEMORY_BUDGET


@pytest.mark.slow
@pytest.mark.parametrize("experiment, size, slice_name, names", [
    ("babistories_v1", "", "v5litepod-16", None),
    ("v2_pretraining", "small", "h100x8", ["transformer"])])  # v2's mosaic takes 20 s more
def test_documented_memory_is_recomputed(experiment, size, slice_name, names):
  documented = SCALING.read_text().splitlines()
  for row in layouts.rows(experiment, size, slice_name, names):
    assert row in documented, f"docs/scaling.md is stale; python -m experiments.layouts: {row}"


def test_bad_pod_arguments_name_the_choices():
  with pytest.raises(ValueError, match="no layout for pod='v5p-8'.*v5p-128"):
    registry.get_config("v2_pretraining", "small,pod=v5p-8")
  with pytest.raises(ValueError, match="h100xN"):
    layouts.accelerator("a100x8")
  with pytest.raises(ValueError, match="drop cpu"):
    registry.get_config("babistories_v1", "cpu,pod=h100x8")
  with pytest.raises(ValueError, match="paper-scale size"):
    registry.get_config("v2_pretraining", "cpu,pod=h100x8")
