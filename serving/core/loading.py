"""Background work of the version manager: tracked worker threads, and loads with retries."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from serving.core import versions
from serving.errors import ServingError
from serving.servables.saved_model import Servable, from_op_error, load_servable

logger = logging.getLogger("serving")

LoadResult = tuple[Servable | None, ServingError | None]


class Workers:
    """Daemon threads tracked under the manager's condition, so it can wait for all of them."""

    def __init__(self, cv: threading.Condition):
        self._cv = cv
        self._threads: set[threading.Thread] = set()

    def busy(self) -> bool:
        """True while any worker is still running; call under the condition."""
        return bool(self._threads)

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Starts `target` in a daemon thread; its end notifies the condition."""

        def run() -> None:
            try:
                target()
            finally:
                with self._cv:
                    self._threads.discard(thread)
                    self._cv.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._cv:
            self._threads.add(thread)
        thread.start()
        return thread

    def join_all(self) -> None:
        """Waits until no worker but the calling thread is left, joining ones spawned meanwhile."""
        while True:
            with self._cv:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                return
            for thread in threads:
                thread.join()


class WorkQueue:
    """Tasks run in order by at most `size` threads, started on demand and ended when idle.

    TF Serving's load and unload executors: a thread pool of N, or with N = 0 the manager's own
    work loop (here one queue of size 1 that loads and unloads share).
    """

    def __init__(self, workers: Workers, cv: threading.Condition, size: int, name: str):
        self._workers, self._cv, self._size, self._name = workers, cv, max(size, 1), name
        self._tasks: deque[Callable[[], None]] = deque()
        self._running = 0

    def submit(self, task: Callable[[], None]) -> None:
        """Queues `task`; starts a thread for it if fewer than `size` are running."""
        with self._cv:
            self._tasks.append(task)
            if self._running < self._size:
                self._running += 1
                self._workers.spawn(self._drain, self._name)

    def _drain(self) -> None:
        while True:
            with self._cv:
                if not self._tasks:
                    self._running -= 1
                    return
                task = self._tasks.popleft()
            try:
                task()
            except Exception:  # one task's bug must not strand the tasks queued behind it
                logger.exception("%s task failed", self._name)


class VersionLoader:
    """TF Serving's `LoaderHarness::Load`: load, warm up, and retry a failed load a few times."""

    def __init__(
        self,
        loader: Callable[[str, int, str], Servable] = load_servable,
        warmup: Callable[[Servable], None] | None = None,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
    ):
        """Keeps the load settings.

        Args:
            loader: (model name, version, path) -> the loaded servable.
            warmup: Runs on each freshly loaded servable; an error there fails the attempt.
            max_num_load_retries: Attempts after the first failed one (negative means none).
            load_retry_interval_s: Wait between attempts (negative means none).
        """
        self._loader = loader
        self._warmup = warmup
        self._max_retries = max(max_num_load_retries, 0)
        self._retry_interval = max(load_retry_interval_s, 0.0)

    def load(
        self,
        name: str,
        number: int,
        path: str,
        cv: threading.Condition,
        may_retry: Callable[[], bool],
    ) -> LoadResult:
        """Loads one version, retrying failures while `may_retry()` holds; logs as TF Serving.

        Args:
            name: The model name.
            number: The version number.
            path: The version's directory.
            cv: The manager's condition; waits between attempts happen on it, so a notify
                re-checks `may_retry` at once.
            may_retry: Called under `cv`; False cancels the remaining attempts.

        Returns:
            (servable, None) once an attempt succeeds, else (None, the last attempt's error).
        """
        sid = versions.servable_id(name, number)
        logger.info("Approving load for servable version %s", sid)
        logger.info("Loading servable version %s", sid)
        attempt = 0
        while True:
            servable, error = self._try_load(name, number, path)
            if error is None:
                break
            logger.error("Loading servable: %s failed: %s", sid, error.to_string())
            if attempt >= self._max_retries:
                logger.info("Retrying of Loading servable: %s exhausted max_num_retries", sid)
                break
            with cv:
                cv.wait_for(lambda: not may_retry(), self._retry_interval)
                if not may_retry():
                    logger.info("Retrying of Loading servable: %s was cancelled.", sid)
                    break
            attempt += 1
            logger.info("Retrying of Loading servable: %s retry: %d", sid, attempt)
        return servable, error

    def _try_load(self, name: str, number: int, path: str) -> LoadResult:
        try:
            servable = self._loader(name, number, path)
        except Exception as error:
            return None, from_op_error(error)
        if self._warmup is not None:
            try:
                self._warmup(servable)
            except Exception as error:
                servable.close()
                return None, from_op_error(error)
        return servable, None
