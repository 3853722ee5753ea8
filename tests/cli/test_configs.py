"""Every shipped training config resolves through the real CLI (`mme5 fit --config X --print_config`)."""

from pathlib import Path

import pytest
import torch
import yaml

from mme5.cli.main import main

CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").glob("*.yaml"))


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
    assert main(["fit", "--config", str(bad), "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "not_a_setting" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flag,value,expected",
    [
        ("--trainer.strategy", "fsdp", "needs CUDA GPUs"),
        ("--trainer.strategy", "deepspeed_stage_2", "needs CUDA GPUs"),
        ("--trainer.accelerator", "gpu", "no CUDA GPU is visible"),  # a GPU recipe on a CPU-only machine
    ],
)
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusals")
def test_gpu_only_settings_on_cpu_are_one_clear_error(flag, value, expected, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    demo = Path(__file__).parents[2] / "configs" / "demo.yaml"
    code = main(["fit", "--config", str(demo), flag, value, "--trainer.max_steps", "1"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mme5 fit: error:")]
    assert len(err) == 1 and expected in err[0]


HUB_RECIPES = [p for p in CONFIGS if "/" in yaml.safe_load(p.read_text())["model"]["encoder"]["model"]]


def test_recipes_name_hub_models():
    names = {p.name for p in HUB_RECIPES}
    assert {"qwen2-vl-2b.yaml", "qwen3-vl-2b.yaml", "qwen3-vl-8b.yaml", "qwen2.5-vl-3b.yaml"} <= names


@pytest.mark.parametrize("config", HUB_RECIPES, ids=lambda p: p.name)
def test_offline_recipe_without_its_model_says_how_to_download_it(config, tmp_path, capsys, monkeypatch):
    """#17: a recipe whose hub model is not cached, offline, stops with one line: the hf download command."""
    monkeypatch.setattr("sys.argv", ["mme5"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = yaml.safe_load(config.read_text())["model"]["encoder"]["model"]
    cpu = ["--trainer.accelerator", "cpu", "--trainer.strategy", "auto", "--trainer.precision", "32"]
    code = main(["fit", "--config", str(config), *cpu, "--trainer.max_steps", "1"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mme5 fit: error:")]
    assert len(err) == 1 and f"hf download {model.split('@')[0]}" in err[0] and "HF_HUB_OFFLINE" in err[0]
