"""`python -m serving <tensorflow_model_server flags>`: see `serving.model_servers.server`."""

import sys

from serving.model_servers.main import main

sys.exit(main())
