"""``python -m shared``: run or validate exports from the command line."""

import sys

from shared.cli import main

# Guarded: worker processes started with "spawn" import the main module again.
if __name__ == "__main__":
    sys.exit(main())
