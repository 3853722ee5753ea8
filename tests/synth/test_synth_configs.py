"""Every shipped synthesis config parses against `mme5 synthesize`'s typed arguments (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mme5.cli.main import main
from mme5.cli.synthesize import parser

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "synth").glob("*.yaml"))


def test_there_are_synth_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(config):
    cfg = parser().parse_args(["--config", str(config)])
    assert cfg.output_dir and cfg.num_samples >= 1
    assert cfg.backend.class_path.startswith("mme5.synth.")


def test_wrong_key_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "output_dir: x\nimages: {folder: y}\nnum_sampels: 3\n"
        "backend: {class_path: mme5.synth.OpenAIServerBackend, init_args: {base_url: u, model: m}}\n"
    )
    assert main(["synthesize", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mme5 synthesize: error:") and "num_sampels" in err
