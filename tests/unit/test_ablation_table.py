"""The ablation table: directions against the paper, and its shape."""

from components.config import load_config
from components.training import TrainConfig
from pipelines.ablate import VARIANTS, ablation_table, direction, variant_config


def test_direction_compares_the_sign_of_the_change_with_the_papers():
    assert direction(40.0, 45.0, 45.9, 48.4) == "same"  # both drop
    assert direction(47.0, 45.0, 45.9, 48.4) == "opposite"  # we rise, the paper dropped
    assert direction(45.0, 45.0, 45.9, 48.4) == "flat"
    assert direction(45.0, 44.0, None, 48.4) == ""  # the paper has no number


def test_table_rows_and_cells():
    results = {"full": {"held_in": 50.0, "gqa": 30.0, "vsr": 60.0},
               "no_instruction": {"held_in": 45.0, "gqa": 31.0, "vsr": 55.0},
               "no_balancing": {"held_in": 49.0, "gqa": 30.0, "vsr": 61.0}}
    table = ablation_table(results, ["gqa", "vsr"]).splitlines()
    assert table[0] == "| variant | held-in avg | gqa | vsr |"
    assert table[2] == "| InstructBLIP (ours, as configured) | 50.0 (94.1) | 30.0 (48.4) | 60.0 |"
    assert table[3] == "| w/o instruction-aware visual features | 45.0 (89.8) same | 31.0 (45.9) opposite | 55.0 |"
    assert table[4] == "| w/o data balancing | 49.0 (92.6) same | 30.0 | 61.0 |"


def test_each_variant_flips_only_its_switch():
    base = load_config(TrainConfig, None, ["data=x", "train_data.seed=7", "schedule.total_steps=40"])
    configs = {v: variant_config(base, v, "abl") for v in VARIANTS}
    assert {v: (c.train_data.instruction_aware, c.train_data.balanced) for v, c in configs.items()} == {
        "full": (True, True), "no_instruction": (False, True), "no_balancing": (True, False)}
    for v, c in configs.items():
        assert c.run_name == f"abl-{v}" and c.schedule.total_steps == 40 and c.train_data.seed == 7
        assert (c.mlflow.registered_model, c.mlflow.alias) == ("instructblip-ablation", v.replace("_", "-"))
    assert base.run_name == "" and base.mlflow.alias == "champion"  # the shared config is not touched
