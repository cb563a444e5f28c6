"""CLI habits a user expects: overrides after the options, on/off values as strings, one KEY=VALUE parser."""

from __future__ import annotations

import pytest

from tests.engine_fixtures import config_args, make_tiny_sysu
from vireid.cli import build_parser, parse_args
from vireid.config import load_config, parse_key_values
from vireid.core import ConfigError
from vireid.runs import RunDir, read_checkpoint


def test_overrides_may_follow_the_options():
    args = parse_args(build_parser(), ["train", "cfg.yaml", "a.b=1", "--out", "runs/x", "train.epochs=1",
                                       "train.amp=off", "--no-progress"])
    assert args.out == "runs/x" and args.no_progress
    assert args.overrides == ["a.b=1", "train.epochs=1", "train.amp=off"]


def test_unknown_options_are_still_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["train", "cfg.yaml", "--out", "x", "--epochs", "3"])
    assert "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes no stray words
        parse_args(build_parser(), ["eval", "runs/x", "mode=indoor"])


def test_train_with_overrides_after_out_and_amp_off(tmp_path):
    from vireid.cli import main

    data = make_tiny_sysu(tmp_path / "sysu")
    cfg, *overrides = config_args(data)
    run = tmp_path / "x"
    assert main(["train", cfg, "--out", str(run), "--no-progress", *overrides, "train.epochs=1", "train.amp=off"]) == 0
    saved = read_checkpoint(RunDir(run).checkpoint("last"))
    assert saved["epoch"] == 0 and saved["config"]["train"]["amp"] == "off"


def test_on_off_yes_no_are_strings_for_string_keys_and_booleans_for_boolean_keys(tmp_path):
    cfg = load_config(None, ["train.amp=off", "train.progress=off", "train.deterministic=yes", "eval.flip=on"])
    assert cfg.train.amp == "off"
    assert cfg.train.progress is False and cfg.train.deterministic is True and cfg.eval.flip is True
    (tmp_path / "c.yaml").write_text("train:\n  amp: off\n  progress: no\n")
    from_file = load_config(tmp_path / "c.yaml")
    assert from_file.train.amp == "off" and from_file.train.progress is False
    with pytest.raises(ConfigError, match=r"config key 'train.progress' expects bool, got 'maybe'"):
        load_config(None, ["train.progress=maybe"])


def test_one_key_value_parser_for_options_and_overrides():
    assert parse_key_values(["mode=indoor", "trials=3", "flip=off", "x="]) == {
        "mode": "indoor", "trials": 3, "flip": "off", "x": ""}
    with pytest.raises(ConfigError, match=r"--option 'mode': expected KEY=VALUE, e.g. --option trial=3"):
        parse_key_values(["mode"])
    with pytest.raises(ConfigError, match=r"override 'train.epochs': expected KEY=VALUE"):
        load_config(None, ["train.epochs"])


def test_reader_options_have_a_shorthand_under_data():
    cfg = load_config(None, ["data.name=regdb", "data.trial=7"])
    assert cfg.data.options == {"trial": 7} and cfg.data.trial == 7
    with pytest.raises(ConfigError, match=r"unknown config key 'data.options.trail'; did you mean "
                                          r"'data.options.trial'\? Valid keys here: trial"):
        load_config(None, ["data.name=regdb", "data.options.trail=7"])
    with pytest.raises(ConfigError, match=r"unknown config key 'data.trial'"):
        load_config(None, ["data.name=sysu", "data.trial=7"])  # not an option of the sysu reader


def test_a_mapping_override_replaces_the_value_and_may_carry_the_delete_mark():
    cfg = load_config(None, ["eval.protocol=regdb", "eval.options={_delete_: true, trial: 3}"])
    assert cfg.eval.options == {"trial": 3}
    assert load_config(None, ["eval.options={trials: 2}"]).eval.options == {"trials": 2}


def test_eval_options_without_protocol_change_the_runs_own_protocol(tmp_path_factory, tmp_path):
    import json

    from tests.test_serve_helpers import trained_run
    from vireid.cli import main

    run, _ = trained_run(tmp_path_factory)
    assert main(["eval", str(run), "--option", "trials=2", "--option", "mode=indoor", "--out", str(tmp_path)]) == 0
    (key, entry), = json.loads((tmp_path / "results.json").read_text())["protocols"].items()
    assert key == "sysu/indoor/single/agw" and len(entry["features"]["bn"]["trials"]) == 2


def test_a_checkpoint_config_of_vireid_0_1_0_still_loads(tmp_path):
    """0.1.0 saved data.train_split and data.trial whatever the reader; today they are reader options."""
    import torch

    from tests.helpers import tiny_config
    from vireid.config import config_to_dict, upgrade_saved_config
    from vireid.inference import load_trained
    from vireid.methods import build_method
    from vireid.runs import save_checkpoint

    cfg = tiny_config("baseline")
    old = config_to_dict(cfg)
    old["data"].pop("options")
    old["data"].update({"train_split": "train", "trial": 1})  # the 0.1.0 fields
    assert upgrade_saved_config(old)["data"] == {**{k: v for k, v in old["data"].items() if k != "trial"}}
    torch.manual_seed(0)
    model = build_method(cfg, 6)
    save_checkpoint(tmp_path / "old.pt", {"config": old, "num_classes": 6, "model": model.state_dict(),
                                          "method": "baseline"})
    loaded_cfg, method, _ = load_trained(tmp_path / "old.pt")
    assert loaded_cfg.data.options == {"train_split": "train", "train_scene": "all"}
    assert loaded_cfg.data.train_split == "train"
    assert all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
