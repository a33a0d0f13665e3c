"""The ablation table: directions against the paper, and its shape."""

from pipelines.ablate import ablation_table, direction


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
