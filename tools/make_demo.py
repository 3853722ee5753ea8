#!/usr/bin/env python
"""Generate the demo corpus: an alias of `mme5 demo`."""

import sys

from mme5.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
