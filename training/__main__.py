"""`python -m training {unet,localizer,generator} ...`: see `training.cli`."""

import sys

from training.cli import main

sys.exit(main())
