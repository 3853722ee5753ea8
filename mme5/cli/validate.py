"""``mme5 validate``: run the validation loop of a config (LightningCLI), e.g. on a checkpoint.

mme5 validate --config configs/demo.yaml --ckpt_path runs/demo/lightning_logs/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from mme5.cli.fit import fit_cli


def main(argv: Sequence[str]) -> int:
    """``mme5 validate [--config X.yaml] [--ckpt_path CKPT] [--section.option value ...]``."""
    fit_cli(["validate", *argv])
    return 0
