#!/usr/bin/env python
"""Convert public parquet training sets into mme5 shards: an alias of `mme5 convert`."""

import sys

from mme5.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
