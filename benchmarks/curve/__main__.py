"""`python -m benchmarks.curve`: see benchmarks/curve/__init__.py."""

import sys

from benchmarks.curve.cli import main

sys.exit(main())
