import sys

from mme5.cli.main import main

sys.exit(main())
