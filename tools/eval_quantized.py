#!/usr/bin/env python
"""The same model at full precision, int8 and nf4 (bitsandbytes), the same evaluation; `--help` lists the options.

    python tools/eval_quantized.py --model tiny-llava --demo_root .mme5-demo --max_rows 20
    python tools/eval_quantized.py --model exported/mme5 --mmeb_dir data/MMEB-eval --image_root data/eval_images \
        --xtd_dir data/XTD --output_dir runs/quantized
"""

import sys

from mme5.errors import run_command


def main() -> int:
    from mme5.cli.eval_quantized import cli_main

    return run_command("eval_quantized", lambda: cli_main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
