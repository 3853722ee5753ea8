"""Every shipped synthesis config parses against the tool's typed arguments (no model is loaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "synth").glob("*.yaml"))


def _tool():
    spec = importlib.util.spec_from_file_location("mme5_tool_synthesize", ROOT / "tools" / "synthesize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_synth_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(config):
    cfg = _tool().build_parser().parse_args(["--config", str(config)])
    assert cfg.output_dir and cfg.num_samples >= 1
    assert cfg.backend.class_path.startswith("mme5.synth.")


def test_wrong_key_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nimages: {folder: y}\nnum_sampels: 3\n"
                   "backend: {class_path: mme5.synth.OpenAIServerBackend, init_args: {base_url: u, model: m}}\n")
    with pytest.raises(SystemExit):
        _tool().build_parser().parse_args(["--config", str(bad)])
    assert "num_sampels" in capsys.readouterr().err
