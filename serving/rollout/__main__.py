"""`python -m serving.rollout`: see `serving.rollout.cli`."""

import sys

from serving.rollout.cli import main

sys.exit(main())
