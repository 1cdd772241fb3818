"""Switching adapter family / weighting method with --set drops the old family's keys with one note."""

from __future__ import annotations

import pytest
import yaml

from mtsam import train
from mtsam.adapters.config import LoRAConfig, NoAdapterConfig
from mtsam.config import load_config
from mtsam.sweep.config import load_sweep_config
from mtsam.sweep.plan import make_plan


def test_adapter_type_switch_drops_the_old_familys_keys(capsys):
    config = load_config(overrides=["adapter.type=lora", "adapter.rank=4"])
    assert isinstance(config.adapter, LoRAConfig) and config.adapter.rank == 4
    assert config.adapter.dropout == 0.1 and config.adapter.targets == ("q", "k", "v")  # shared keys kept
    err = capsys.readouterr().err
    assert err == (
        "note: adapter.type=lora: dropped adapter.ranks, adapter.scaling (not options of the chosen family)\n"
    )
    assert isinstance(load_config(overrides=["adapter.type=none"]).adapter, NoAdapterConfig)
    assert capsys.readouterr().err.count("\n") == 1


def test_train_cli_switches_to_no_adapter(capsys):
    assert train.main(["--set", "adapter.type=none", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("note: adapter.type=none: dropped adapter.ranks") and err.count("\n") == 1


def test_a_key_the_new_family_lacks_set_explicitly_is_still_an_error(capsys):
    code = train.main(["--set", "adapter.type=lora", "--set", "adapter.ranks=[4,4,2]", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: adapter.ranks: unknown key\n"  # one line, no note


def test_weighting_method_switch_drops_foreign_hyperparameters(capsys):
    config = load_config(overrides=["weighting.method=dwa", "weighting.temperature=3"])
    assert config.weighting.method == "dwa" and config.weighting.hparams() == {"temperature": 3}
    assert "dropped weighting.weights" in capsys.readouterr().err
    # no switch, no note: fixed keeps its weights
    assert load_config(overrides=["weighting.weights=[1,2,3]"]).weighting.hparams() == {"weights": [1, 2, 3]}
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        load_config(overrides=["weighting.method=magic"])  # an unknown name drops nothing


def test_sweep_base_adapter_switch(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    base = {"adapter": {"type": "tora", "ranks": [8, 8, 2], "scaling": 1.0}, "train": {"epochs": 2}}
    path.write_text(yaml.safe_dump({"base": base, "space": {"train": {"lr": [0.001, 0.002]}}}))
    cfg, file = load_sweep_config(path, ["base.adapter.type=lora", f"storage={tmp_path / 'runs'}"])
    assert cfg.base["adapter"] == {"type": "lora"}
    assert capsys.readouterr().err.startswith("note: base.adapter.type=lora: dropped base.adapter.ranks")
    plan = make_plan(cfg, file)
    assert plan.base["adapter"]["type"] == "lora" and "ranks" not in plan.base["adapter"]
