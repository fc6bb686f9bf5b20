"""`python -m circuitlab ...`: the `circuitlab` command where its script is not on PATH (Colab, a --user install)."""

import sys

from circuitlab.cli import main

sys.exit(main())
