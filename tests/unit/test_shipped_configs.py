"""Every shipped config file loads into its config class (catches typos and stale keys)."""

from pathlib import Path

import pytest

from components.config import ConfigError, load_config
from components.evaluation import EvalConfig
from components.preparation import PrepareConfig
from components.serving_model import ServeConfig
from components.training import TrainConfig
from components.workflow import WorkflowConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGE_OF = {"prepare": PrepareConfig, "train": TrainConfig, "evaluate": EvalConfig, "serve": ServeConfig,
            "workflow": WorkflowConfig}
# Ray Serve's own config files (not ours; tests/unit/test_serving_model.py checks them against Serve's schema)
SERVE_FILES = {"serve_app.yaml"}


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in SERVE_FILES),
                         ids=lambda p: p.name)
def test_shipped_config_loads(path):
    stage = path.stem.split("_")[0]
    assert stage in STAGE_OF, f"{path.name}: no config class for stage {stage!r}"
    # the paths that usually come from the command line
    overrides = ["data=/tmp/prepared"] if stage in ("train", "evaluate") else []
    cfg = load_config(STAGE_OF[stage], str(path), overrides)
    if stage == "prepare":
        assert cfg.selected()
    else:
        cfg.validate()


def test_default_train_config_is_the_built_in_default():
    """configs/train.yaml documents the defaults; it must not drift from them."""
    from components.config import to_dict

    shipped = load_config(TrainConfig, str(CONFIGS / "train.yaml"), ["data=x"])
    assert to_dict(shipped) == to_dict(load_config(TrainConfig, None, ["data=x"]))


def test_default_evaluate_config_is_the_built_in_default():
    from components.config import to_dict

    shipped = load_config(EvalConfig, str(CONFIGS / "evaluate.yaml"), ["data=x"])
    assert to_dict(shipped) == to_dict(load_config(EvalConfig, None, ["data=x"]))
    assert shipped.verbalizers == {"yes": ["yes", "true"], "no": ["no", "false"]}


def test_default_serve_config_is_the_built_in_default():
    from components.config import to_dict

    assert to_dict(load_config(ServeConfig, str(CONFIGS / "serve.yaml"))) == to_dict(ServeConfig())


def test_paper_config_is_the_papers_recipe():
    cfg = load_config(TrainConfig, str(CONFIGS / "train_flant5xl.yaml"), ["data=x"])
    assert (cfg.schedule.lr, cfg.schedule.warmup_steps, cfg.schedule.total_steps) == (1e-5, 1000, 60000)
    assert cfg.global_batch_size == 192 and cfg.bf16 and cfg.model.source == "blip2"
    assert (cfg.optimizer.beta1, cfg.optimizer.beta2, cfg.optimizer.weight_decay) == (0.9, 0.999, 0.05)
    assert cfg.validation.every_steps == 3000 and cfg.train_data.augment.enabled


def test_vicuna_config_is_the_papers_7b_recipe():
    """The FlanT5-XL recipe's schedule at the paper's 7B batch (128), continuing the released
    InstructBLIP Vicuna-7B (BLIP-2's released checkpoints use OPT and FlanT5)."""
    flant5 = load_config(TrainConfig, str(CONFIGS / "train_flant5xl.yaml"), ["data=x"])
    cfg = load_config(TrainConfig, str(CONFIGS / "train_vicuna7b.yaml"), ["data=x"])
    assert cfg.schedule == flant5.schedule and cfg.optimizer == flant5.optimizer
    assert cfg.global_batch_size == 128 == cfg.micro_batch_size * cfg.scaling.num_workers
    assert (cfg.model.source, cfg.model.path) == ("instructblip", "Salesforce/instructblip-vicuna-7b")
    assert cfg.bf16 and cfg.scaling.use_gpu and cfg.train_data.augment.enabled
    assert cfg.train_data.max_target_tokens == 256 and cfg.validation.every_steps == 3000


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


def test_default_workflow_config_is_the_built_in_default():
    """`iblip run` with and without `--config configs/workflow.yaml` is the same embedded default."""
    from components.config import to_dict

    shipped = load_config(WorkflowConfig, str(CONFIGS / "workflow.yaml"))
    assert to_dict(shipped) == to_dict(load_config(WorkflowConfig, None, []))
    assert shipped.sample_world.per_dataset == 200 and shipped.evaluate.max_samples == 20 and not shipped.raw
