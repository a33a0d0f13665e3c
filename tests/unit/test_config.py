from dataclasses import dataclass

import pytest

from components.config import ConfigError, doc, load_config, from_dict, apply_override


@dataclass
class Inner:
    rate: float = doc("a rate", 1.0)
    names: list[str] = doc("names", default_factory=list)


@dataclass
class Outer:
    steps: int = doc("steps", 10)
    flag: bool = doc("flag", False)
    inner: Inner = doc("inner", default_factory=Inner)
    cache: str = doc("a folder, or off", "")
    scales: dict[str, float] = doc("per-name scales", default_factory=lambda: {"a": 2.0, "b": 0.5})
    weights: dict[str, float] = doc("weights", default_factory=dict)


def test_yaml_file_and_dotted_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\ninner:\n  rate: 0.5\n")
    cfg = load_config(Outer, str(f), ["inner.names=[a, b]", "weights.okvqa=2", "flag=true"])
    assert cfg.steps == 5 and cfg.inner.rate == 0.5 and cfg.inner.names == ["a", "b"]
    assert cfg.weights == {"okvqa": 2.0} and isinstance(cfg.weights["okvqa"], float)
    assert cfg.flag is True


def test_override_wins_over_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\n")
    assert load_config(Outer, str(f), ["steps=7"]).steps == 7


@pytest.mark.parametrize("data, key", [({"stepz": 1}, "stepz"), ({"inner": {"rat": 1}}, "inner.rat")])
def test_unknown_keys_are_errors_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_dict(Outer, data)


@pytest.mark.parametrize("data, msg", [({"steps": "many"}, "steps"), ({"flag": 1}, "flag"), ({"inner": {"names": "x"}}, "inner.names")])
def test_wrong_types_are_errors_naming_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_exponent_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-5 and 1.0e5 as strings (it wants a dot and a signed exponent): for a
    float setting they mean the number, in a file and on the command line; other strings stay errors."""
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  rate: 1e-5\n")
    assert load_config(Outer, str(f)).inner.rate == 1e-5
    cfg = load_config(Outer, None, ["inner.rate=1.0e5", "weights.okvqa=2E-1"])
    assert cfg.inner.rate == 1e5 and cfg.weights == {"okvqa": 0.2}
    for bad in ("1e", "e5", "1e-5x", "fast"):
        with pytest.raises(ConfigError, match="inner.rate: expected a number"):
            load_config(Outer, None, [f"inner.rate={bad}"])
    with pytest.raises(ConfigError, match="steps: expected an integer"):  # integers stay integers
        load_config(Outer, None, ["steps=1e3"])


def test_yaml_11_boolean_words_are_text_for_strings_and_booleans_for_flags(tmp_path):
    """PyYAML reads off/on/yes/no as booleans, which refused `model.tiny_cache=off` (a string setting
    whose documented value is the word). Only true/false are booleans now; a boolean setting still
    takes the words."""
    assert load_config(Outer, None, ["cache=off"]).cache == "off"
    f = tmp_path / "c.yaml"
    f.write_text("cache: no\nflag: on\ninner:\n  names: [yes, off]\n")
    cfg = load_config(Outer, str(f))
    assert cfg.cache == "no" and cfg.flag is True and cfg.inner.names == ["yes", "off"]
    for word, value in (("off", False), ("Yes", True), ("FALSE", False), ("true", True)):
        assert load_config(Outer, None, [f"flag={word}"]).flag is value
    with pytest.raises(ConfigError, match="flag: expected true/false, got 'maybe'"):
        load_config(Outer, None, ["flag=maybe"])


def test_the_tiny_cache_can_be_switched_off_from_the_command_line():
    from components.training import TrainConfig

    assert load_config(TrainConfig, None, ["data=x", "model.tiny_cache=off"]).model.tiny_cache == "off"


def test_a_mapping_given_in_part_keeps_its_other_default_entries(tmp_path):
    """`mixing.weights.okvqa=3` used to drop the default aokvqa weight (the mapping was replaced)."""
    assert load_config(Outer, None, ["scales.a=3"]).scales == {"a": 3.0, "b": 0.5}
    f = tmp_path / "c.yaml"
    f.write_text("scales:\n  c: 1.5\n")
    assert load_config(Outer, str(f), ["scales.b=1"]).scales == {"a": 2.0, "b": 1.0, "c": 1.5}
    from components.preparation import PrepareConfig

    weights = load_config(PrepareConfig, None, ["raw=r", "out=o", "mixing.weights.okvqa=3"]).mixing.weights
    assert weights == {"okvqa": 3.0, "aokvqa": 0.5}


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_override({}, "steps")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, str(tmp_path / "nope.yaml"))
