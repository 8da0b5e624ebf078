"""`python -m benchmarks.peers`: see benchmarks/peers/__init__.py."""

import sys

from benchmarks.peers.driver import main

sys.exit(main())
