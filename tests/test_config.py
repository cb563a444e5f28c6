"""Typed configs: _base_ inheritance, dotted overrides, strict keys, round trip."""

from pathlib import Path

import pytest

from vireid.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from vireid.core import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_base_inheritance_and_override(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 5, seed: 3}\nmodel: {arch: resnet18}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain: {epochs: 7}\n")
    cfg = load_config(tmp_path / "child.yaml", ["model.last_stride=2", "optim.milestones=[3, 4]"])
    assert cfg.train.epochs == 7 and cfg.train.seed == 3
    assert cfg.model.arch == "resnet18" and cfg.model.last_stride == 2
    assert cfg.optim.milestones == [3, 4]


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'model.last_strid'.*did you mean 'model.last_stride'"):
        load_config(None, ["model.last_strid=1"])


def test_unknown_method_option_is_checked_by_method():
    with pytest.raises(ConfigError, match=r"method.varient.*did you mean 'method.variant'"):
        load_config(None, ["method.varient=agw"])


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match=r"train.epochs' expects int, got 'many'"):
        load_config(None, ["train.epochs=many"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; a float key takes it as the number it means
    (tmp_path / "c.yaml").write_text("optim: {lr: 3e-4}\n")
    cfg = load_config(tmp_path / "c.yaml", ["optim.weight_decay=5E-4", "optim.momentum=1e0"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay == 5e-4 and cfg.optim.momentum == 1.0
    with pytest.raises(ConfigError, match=r"optim.lr' expects float, got 'e-4'"):
        load_config(None, ["optim.lr=e-4"])
    with pytest.raises(ConfigError, match=r"train.epochs' expects int, got '1e2'"):
        load_config(None, ["train.epochs=1e2"])


def test_unknown_method_suggests():
    with pytest.raises(ConfigError, match=r"unknown method 'baselin'.*did you mean 'baseline'"):
        load_config(None, ["method.name=baselin"])


def test_circular_base(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


# configs/base/ holds fragments that are only loaded through their children
SHIPPED = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "base")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(dump_config(cfg))
    again = load_config(dumped)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_delete_replaces_a_base_mapping(tmp_path):
    (tmp_path / "base.yaml").write_text("eval: {options: {mode: all, shots: 1}}\n")
    (tmp_path / "merge.yaml").write_text("_base_: base.yaml\neval: {options: {trial: 2}}\n")
    (tmp_path / "replace.yaml").write_text("_base_: base.yaml\neval: {options: {_delete_: true, trial: 2}}\n")
    assert load_config(tmp_path / "merge.yaml").eval.options == {"mode": "all", "shots": 1, "trial": 2}
    assert load_config(tmp_path / "replace.yaml").eval.options == {"trial": 2}


def test_regdb_and_llcm_configs_carry_only_their_protocol_options():
    assert load_config(REPO / "configs/regdb/baseline.yaml").eval.options == {
        "trial": 1, "direction": "visible_to_thermal"}
    assert load_config(REPO / "configs/llcm/baseline.yaml").eval.options == {"direction": "ir_to_visible", "trials": 10}
