#!/usr/bin/env python
"""Compare a model at full precision, int8 and nf4: an alias of `mme5 eval-quantized`."""

import sys

from mme5.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval-quantized", *sys.argv[1:]]))
