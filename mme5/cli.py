"""The `mme5` command: `fit` / `validate` (LightningCLI), `export` and `evaluate`.

    mme5 fit --config configs/demo.yaml
    mme5 fit --config configs/mme5-llama-3.2-11b-vision.yaml --print_config
    mme5 export --ckpt runs/demo/checkpoints/last.ckpt --out exported/demo
    mme5 evaluate --model exported/demo --mmeb_dir ... --image_root ...
"""

from __future__ import annotations

import sys
from typing import Sequence

from lightning.pytorch.cli import LightningCLI

from mme5.errors import user_errors


class MME5CLI(LightningCLI):
    """LightningCLI with the encoder's model linked into the DataModule (it builds the collator)."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.link_arguments("model.encoder.model", "data.model")
        parser.link_arguments("model.encoder.max_length", "data.max_length")


def fit_cli(args: Sequence[str] | None = None, run: bool = True) -> MME5CLI:
    """Build (and by default run) the LightningCLI over EmbeddingModule and ShardDataModule."""
    from mme5.data import ShardDataModule
    from mme5.module import EmbeddingModule

    return MME5CLI(
        EmbeddingModule,
        ShardDataModule,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "mme5"},
        auto_configure_optimizers=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mme5` console script."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "export":
            from mme5.export import cli_main as export_main

            return export_main(argv[1:]) or 0
        if argv and argv[0] == "evaluate":
            from mme5.eval import cli_main as evaluate_main

            return evaluate_main(argv[1:]) or 0
        fit_cli(None if from_command_line else argv)
        return 0
    except user_errors() as exc:
        print(f"mme5: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
