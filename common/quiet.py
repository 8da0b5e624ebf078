"""Imports TensorFlow without its start-up banner, so CLI errors stay one readable line.

TensorFlow's native libraries print oneDNN and CUDA notices to file descriptor 2 while they load,
before any logging setting applies. Set TF_CPP_MIN_LOG_LEVEL=0 to see every native log again.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow():
    """Returns the `tensorflow` module, imported with native start-up notices silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow
    finally:
        # Errors raised by the import surface after stderr is back.
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow
