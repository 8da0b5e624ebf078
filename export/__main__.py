"""`python -m export {unet,localizer,generator} --run RUN_DIR --base-path MODELS_DIR`."""

import sys

from export.cli import main

sys.exit(main())
