#!/usr/bin/env python
"""Generate mmE5-style synthetic training shards from a folder of images with a VLM.

    python tools/synthesize.py --config configs/synth/vllm_offline.yaml
    python tools/synthesize.py --config configs/synth/vllm_offline.yaml --num_samples 100 --output_dir runs/x
    python tools/synthesize.py --config configs/synth/vllm_offline.yaml --print_config

A run killed at any point resumes when started again with the same configuration.
"""

from __future__ import annotations

import logging
import sys

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from mme5.synth.backends import Backend
from mme5.synth.pipeline import SynthConfig, synthesize


def build_parser() -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docstrings become --help
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options below")
    parser.add_class_arguments(SynthConfig, as_group=False, fail_untyped=True)
    parser.add_subclass_arguments(Backend, "backend", required=True,
                                  help="generation backend: class_path + init_args")
    parser.add_argument("--log_level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    cfg = parser.parse_args(argv)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init = parser.instantiate(cfg)
    config_fields = {k: init[k] for k in SynthConfig.__dataclass_fields__}
    stats = synthesize(SynthConfig(**config_fields), init.backend)
    print(f"accepted {stats['accepted']} / {stats['attempted']} attempts into {stats['shards']} shard(s); "
          f"{stats['samples_per_second']:.3f} samples/s; report: {cfg.output_dir}/stats.md")
    return stats


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"synthesize: error: {exc}", file=sys.stderr)
        sys.exit(2)
