"""`python -m uadcore ...` is the `uad` command (used for background jobs and torchrun)."""

import sys

from uadcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
