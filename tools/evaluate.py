#!/usr/bin/env python
"""Evaluate an embedding model on MMEB / XTD (same as `mme5 evaluate`); `--help` lists the options.

    python tools/evaluate.py --model exported/demo --demo_root .mme5-demo
    python tools/evaluate.py --model exported/mme5 --mmeb_dir data/MMEB-eval --image_root data/eval_images \
        --xtd_dir data/XTD --output_dir runs/eval
"""

import sys

from mme5.errors import run_command


def main() -> int:
    from mme5.cli.evaluate import cli_main

    return run_command("evaluate", lambda: cli_main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
