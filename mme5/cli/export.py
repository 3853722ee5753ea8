"""``mme5 export``: a training checkpoint of ``mme5 fit`` as a Hugging Face-style model folder.

mme5 export --ckpt runs/demo/lightning_logs/version_0/checkpoints/last.ckpt --out exported/demo
mme5 export --ckpt ... --out exported/demo --push_to_hub user/demo-embedder

The folder loads with mme5.load, sentence-transformers, transformers and vLLM, and carries a model
card (README.md).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """``mme5 export --ckpt CKPT --out DIR [--instructions JSON] [--push_to_hub REPO [--private true]]``."""
    from mme5.cli.parsing import run_function
    from mme5.model.export import export_checkpoint

    run_function(export_checkpoint, argv, "mme5 export")
    return 0
