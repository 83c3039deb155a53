"""`python -m midge` is the `midge` command."""

import sys

from midge.cli import main

sys.exit(main())
