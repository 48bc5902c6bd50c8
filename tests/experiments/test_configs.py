"""Every experiment config loads, documents itself, is locked, and builds its models."""

import re
import subprocess
import sys

import ml_collections
import pytest

from experiments import registry
from mosaics_jax.train.config import model_config

SMALL_ARG = {"quickstart": "tiny", "babistories_v1": "cpu", "v2_pretraining": "cpu",
             "three_moons": "tiny", "regbench": "tiny", "icl_classification": "tiny",
             "ruler_v2": "tiny"}
FULL_ARG = {"v2_pretraining": "small"}  # the others run on an empty argument


def test_every_experiment_has_a_small_argument():
  assert set(registry.names()) == set(SMALL_ARG)


@pytest.mark.parametrize("name", registry.names())
def test_config_documents_itself_and_is_locked(name):
  doc = registry.load(name).__doc__
  for heading in ("Command", "Hardware", "Expected result"):
    assert re.search(heading, doc), f"{name}: the docstring needs a '{heading}' paragraph"
  assert f"experiments/configs/{name}.py" in doc
  for arg in (FULL_ARG.get(name, ""), SMALL_ARG[name]):
    config = registry.get_config(name, arg)
    assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
    with pytest.raises(AttributeError):
      config.train.num_stepz = 1  # typos fail
    for model_name, section in config.get("models", {}).items():
      built = model_config(model_name, section, vocab_size=config.data.tokenizer.vocab_size)
      assert built.context_length >= config.data.seq_len or built.position != "learned"


def test_unknown_names_and_arguments():
  with pytest.raises(ValueError, match="Unknown experiment"):
    registry.path("quickstartt")
  with pytest.raises(ValueError, match="Unknown v2_pretraining arguments"):
    registry.get_config("v2_pretraining", "huge")
  with pytest.raises(ValueError, match="v2_pretraining takes one of"):
    registry.get_config("v2_pretraining", "cpu,small")


def test_config_flag_takes_a_registered_name_or_a_path():
  quickstart = str(registry.path("quickstart"))
  assert registry.expand_config_names(["main", "--config=quickstart:tiny", "--workdir=w"]) == [
      "main", f"--config={quickstart}:tiny", "--workdir=w"]
  assert registry.expand_config_names(["main", "--config", "regbench:n=100,cpu"]) == [
      "main", "--config", f"{registry.path('regbench')}:n=100,cpu"]
  assert registry.expand_config_names(["main", "--config=quickstart"]) == [
      "main", f"--config={quickstart}"]
  for kept in (["main", "--config=experiments/configs/quickstart.py:tiny"],
               ["main", "--config=my.py", "--config.train.num_steps=3"]):
    assert registry.expand_config_names(kept) == kept
  with pytest.raises(SystemExit, match="no experiment 'quickstartt'.*python -m experiments"):
    registry.expand_config_names(["main", "--config=quickstartt:tiny"])


def test_unset_model_fields_can_be_set_from_the_command_line():
  """--config.models.NAME.FIELD=VALUE for a field left None (automatic), as main parses it."""
  script = (
      "import sys; from absl import flags; from ml_collections import config_flags;"
      "from mosaics_jax.train.config import model_config;"
      "config = config_flags.DEFINE_config_file('config'); flags.FLAGS(sys.argv);"
      "models = config.value.models;"
      "print(model_config('mosaic', models.mosaic, 2048).retrieval_implementation,"
      " model_config('mosaic', models.mosaic, 2048).persistent_implementation,"
      " model_config('transformer', models.transformer, 2048).dtype)")
  out = subprocess.run(
      [sys.executable, "-c", script, f"--config={registry.path('quickstart')}:tiny",
       "--config.models.mosaic.retrieval_implementation=xla",
       "--config.models.transformer.dtype=bfloat16"],
      capture_output=True, text=True, timeout=120, check=True)
  assert out.stdout.split() == ["xla", "None", "bfloat16"]
