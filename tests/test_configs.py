"""Every shipped training config resolves through the real CLI (`mme5 fit --config X --print_config`)."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from mme5.cli import main

CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {"demo.yaml", "mme5-llama-3.2-11b-vision.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_resolves(config, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(config.read_text())
    # Every value the file sets survives resolution (no key silently ignored).
    for section in ("model", "data"):
        for key, value in (written.get(section) or {}).items():
            if not isinstance(value, (dict, list)):
                assert resolved[section][key] == value, (section, key)
    assert "model" not in resolved["data"]  # linked from model.encoder.model, so not settable twice


def test_unknown_key_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  not_a_setting: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad), "--print_config"])
    assert exit_info.value.code != 0
    assert "not_a_setting" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_strategy_whose_package_is_missing_is_one_clear_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    demo = Path(__file__).parents[1] / "configs" / "demo.yaml"
    code = main(["fit", "--config", str(demo), "--trainer.strategy", "deepspeed_stage_2", "--trainer.max_steps", "1"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mme5: error:")]
    assert len(err) == 1 and "DeepSpeed" in err[0]
