"""``python -m shared``: run or validate exports from the command line."""

import sys

from shared.cli import main

sys.exit(main())
