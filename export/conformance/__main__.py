"""`python -m export.conformance VERSION_DIR [--run RUN_DIR] [--tags serve]`."""

import sys

from export.conformance.cli import main

sys.exit(main())
