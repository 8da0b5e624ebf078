"""`python -m serving`: flag parsing stays free of TensorFlow, so flag errors answer at once.

Example:
    python -m serving --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --base_path_map=/models=models
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from serving.model_servers import flags

log = logging.getLogger("serving")
# tensorflow_model_server's `return -1` from main, as the shell sees it.
FLAG_FAILURE = 255
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, then serves. Flag errors are one line on stderr and exit 255, the
    status tensorflow_model_server gives a flag it cannot parse (`return -1`)."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "-help") for arg in argv):
        print(flags.usage())
        return 0
    try:
        options, ignored = flags.parse_flags(argv)
        if options.version:
            print("TensorFlow ModelServer (embedded Python server, TF Serving 2.21 API)")
            return 0
        flags.check_options(options)
    except flags.FlagError as error:
        print(f"python -m serving: {error}", file=sys.stderr)
        return FLAG_FAILURE
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s serving] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    for name in ignored:
        log.info("--%s has no effect in the embedded server; ignored", name)
    # From here on SIGTERM/SIGINT ask for a drain (or, during start-up, a quick stop).
    stop = threading.Event()
    _stop_on_signals(stop)
    # Importing the server pulls in TensorFlow, so it waits until the flags are known good.
    from common.quiet import import_tensorflow

    import_tensorflow()
    from serving import errors
    from serving.config import files as config_lib
    from serving.model_servers.server import STARTUP_FAILURE, serve

    try:
        status = serve(options, stop)
    except (config_lib.ConfigError, errors.ServingError, ValueError) as error:
        text = (
            error.to_string()
            if isinstance(error, errors.ServingError)
            else f"INVALID_ARGUMENT: {error}"
        )
        print(f"Failed to start server. Error: {text}", file=sys.stderr)
        status = STARTUP_FAILURE
    _exit_now(status)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, whichever thread the kernel hands them to.

    A Python handler runs only when the main thread next executes bytecode. A signal sent to the
    process may be delivered to any thread that does not block it (TensorFlow's, grpcio's); the
    main thread, blocked in a long wait, would then not notice it for up to an hour. So both
    signals are blocked here, before any other thread exists (threads inherit the mask, and the
    server starts no child processes), and one thread takes them with sigwait.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def take() -> None:
        while True:
            signum = signal.sigwait(STOP_SIGNALS)
            log.info("Received %s", signal.Signals(signum).name)
            stop.set()

    threading.Thread(target=take, name="signals", daemon=True).start()


def _exit_now(status: int) -> None:
    """Ends the process now: after the drain deadline, a TensorFlow call still running in a
    worker thread (Python cannot interrupt it) must not keep the process alive."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
