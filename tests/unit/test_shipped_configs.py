"""Every shipped config file loads into its config class (catches typos and stale keys)."""

from pathlib import Path

import pytest

from components.config import ConfigError, load_config
from components.preparation import PrepareConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGE_OF = {"prepare": PrepareConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads(path):
    stage = path.stem.split("_")[0]
    assert stage in STAGE_OF, f"{path.name}: no config class for stage {stage!r}"
    cfg = load_config(STAGE_OF[stage], str(path))
    assert cfg.selected()


def test_default_prepare_config_selects_all_26():
    cfg = load_config(PrepareConfig, str(CONFIGS / "prepare.yaml"))
    assert len(cfg.selected()) == 26
    assert cfg.mixing.weights == {"okvqa": 2.0, "aokvqa": 0.5}


def test_unknown_dataset_in_config_is_named():
    with pytest.raises(ConfigError, match="no_such_set"):
        load_config(PrepareConfig, None, ["datasets=[no_such_set]"])


def test_custom_dataset_cannot_shadow_a_builtin():
    with pytest.raises(ConfigError, match="vqav2"):
        load_config(PrepareConfig, None, ["custom=[{name: vqav2, files: {train: x.jsonl}}]"])
