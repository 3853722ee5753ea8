#!/usr/bin/env python
"""The same model at full precision, int8 and nf4 (bitsandbytes), the same evaluation; `--help` lists the options.

    python tools/eval_quantized.py --model tiny-llava --demo_root .mme5-demo --max_rows 20
    python tools/eval_quantized.py --model exported/mme5 --mmeb_dir data/MMEB-eval --image_root data/eval_images \
        --xtd_dir data/XTD --output_dir runs/quantized
"""

import sys

from mme5.errors import user_errors


def main() -> int:
    from mme5.eval.quantized_cli import cli_main

    try:
        return cli_main(sys.argv[1:])
    except user_errors() as exc:
        print(f"eval_quantized: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
