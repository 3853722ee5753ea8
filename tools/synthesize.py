#!/usr/bin/env python
"""Generate mmE5-style synthetic training shards from images with a VLM: an alias of `mme5 synthesize`."""

import sys

from mme5.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["synthesize", *sys.argv[1:]]))
