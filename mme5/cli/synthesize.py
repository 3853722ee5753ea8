"""``mme5 synthesize``: mmE5-style synthetic training shards from a folder of images with a VLM.

    mme5 synthesize --config configs/synth/vllm_offline.yaml
    mme5 synthesize --config configs/synth/vllm_offline.yaml --num_samples 100 --output_dir runs/x
    mme5 synthesize --config configs/synth/vllm_offline.yaml --print_config

A run killed at any point resumes when started again with the same configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mme5.synth.backends import Backend
from mme5.synth.pipeline import SynthConfig

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

#: The dataclass parameter whose fields are top-level options (the flat layout of configs/synth/*.yaml).
SPREAD = ("settings",)


def synthesize(settings: SynthConfig, backend: Backend, log_level: str = "INFO") -> dict[str, Any]:
    """Generate mmE5-style synthetic training shards from a folder of images with a VLM.

    Args:
        settings: what to generate and where (its fields are the top-level options).
        backend: generation backend: class_path + init_args.
        log_level: logging level.
    """
    from mme5.synth.pipeline import synthesize as run_synthesis

    logging.getLogger().setLevel(log_level)
    stats = run_synthesis(settings, backend)
    print(
        f"accepted {stats['accepted']} / {stats['attempted']} attempts into {stats['shards']} shard(s); "
        f"{stats['samples_per_second']:.3f} samples/s; report: {settings.output_dir}/stats.md"
    )
    return stats


def parser() -> ArgumentParser:
    """The parser of ``mme5 synthesize`` (what :func:`run` parses with)."""
    from mme5.cli.parsing import function_parser

    return function_parser(synthesize, "mme5 synthesize", spread=SPREAD)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv`` (as ``mme5 synthesize`` does) and run the synthesis; returns its statistics."""
    from mme5.cli.parsing import run_function

    return run_function(synthesize, argv, "mme5 synthesize", spread=SPREAD)


def main(argv: Sequence[str]) -> int:
    """``mme5 synthesize --config X.yaml [--option value ...]``."""
    run(argv)
    return 0
