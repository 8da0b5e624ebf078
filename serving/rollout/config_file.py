"""models.config as the rollout tool writes it: one operator at a time, edited in place.

- **Lock.** An advisory `fcntl.flock` on `.<name>.lock` beside the real file (symlinks resolved,
  so two paths to one file share one lock), which names its holder and is removed on release.
  Not on the config itself: each write renames a new file over it, and a lock on the old inode
  would not exclude the next operator. A second operator waits up to `--lock_timeout` seconds,
  saying who holds it, then gives up in one line. The lock binds only this tool; a hand edit is
  caught by the next check.
- **Compare before write.** Each write first reads the file again under the lock and refuses,
  naming the change, when it differs from what this rollout last read or wrote.
- **In place.** Only the changed fields' text is rewritten (`spans`): comments stay.
- **Symlinks followed.** The real file is replaced, so a Kubernetes ConfigMap's
  `models.config -> ..data/models.config` stays a link. A ConfigMap volume is read-only: that is
  refused before anything changes (change the ConfigMap instead; the kubelet replaces the files).
- **Durable.** A temporary file in the same folder, fsynced, renamed over the file, and the
  folder fsynced, so a crash leaves the old file or the new one.

Example:
    with ConfigLock("serving/models.config", timeout=30, holder="canary unet 2"):
        file = ConfigFile("serving/models.config")
        config = file.read()
        file.write(rc.canary_load(config, "unet", 2, stable=1))
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from serving.rollout.config_edit import ModelServerConfig, RefusalError, parse_config
from serving.rollout.spans import edit_text

LOCK_POLL_S = 0.1


def lock_path(config_path: str | os.PathLike) -> Path:
    """`.<name>.lock` beside the real config file."""
    real = Path(os.path.realpath(config_path))
    return real.with_name(f".{real.name}.lock")


def _read_only(path: Path) -> RefusalError:
    return RefusalError(
        f"{path} is on a read-only file system; a Kubernetes ConfigMap volume is: change the "
        "ConfigMap (kubectl apply) and let --model_config_file_poll_wait_seconds pick it up"
    )


class ConfigLock:
    """The exclusive advisory lock of one config file, held in a `with` block.

    Args:
        config_path: The config file (a symlink is followed).
        timeout: Seconds to wait for another holder; 0 gives up at once.
        holder: What this operator does, shown to the others (`canary unet 2`).
        say: Where the one-line "waiting" notice goes.
    """

    def __init__(self, config_path, timeout: float, holder: str, say=None):
        self.path, self.timeout, self.holder = lock_path(config_path), timeout, holder
        self.config = Path(os.path.realpath(config_path))
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.handle = None

    def _open(self):
        try:
            return open(self.path, "a+", encoding="utf-8")  # closed in __exit__
        except OSError as error:
            if error.errno == errno.EROFS:
                raise _read_only(self.config) from None
            raise RefusalError(f"cannot open the lock {self.path}: {error.strerror}") from None

    def __enter__(self) -> ConfigLock:
        deadline, told = time.monotonic() + self.timeout, False
        while True:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _holder(handle)
                handle.close()
                if time.monotonic() >= deadline:
                    raise RefusalError(
                        f"{self.path} is held by {other}; gave up after {self.timeout:g} s "
                        "(--lock_timeout): retry when that rollout ends"
                    ) from None
                if not told:
                    self.say(
                        f"waiting for the lock {self.path} (held by {other}), "
                        f"up to {self.timeout:g} s"
                    )
                    told = True
                time.sleep(LOCK_POLL_S)
                continue
            if _same_file(handle, self.path):
                break
            handle.close()  # its holder removed it on release: lock the file there now
        handle.seek(0)
        handle.truncate()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        handle.write(f"pid {os.getpid()}: {self.holder} (since {stamp})")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        # Removed while still locked, so no lock file is left beside the config; a waiter that
        # locks the removed file sees that and opens the path again.
        with contextlib.suppress(OSError):
            self.path.unlink()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None


def _same_file(handle, path: Path) -> bool:
    try:
        named, opened = path.stat(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip() or "another rollout"


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces the real file behind `path` with `text`: temp file, fsync, rename, fsync folder."""
    real = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if real.exists():
            os.chmod(tmp, real.stat().st_mode & 0o7777)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    except OSError as error:  # some file systems cannot fsync a folder; the rename stands
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(folder)


def write_config(path: str | os.PathLike, config: ModelServerConfig) -> None:
    """Edits the file at `path` in place to hold `config` (no lock, no comparison).

    Raises:
        RefusalError: The edit would drop a comment or goes beyond versions and labels.
    """
    write_text(path, edit_text(Path(path).read_text(encoding="utf-8"), config))


def _changes(seen: str, now: str, most: int = 6) -> str:
    """The differences as one line: `at line 9 | -old | +new`, the first `most` of them."""
    parts = []
    for line in difflib.unified_diff(seen.splitlines(), now.splitlines(), lineterm="", n=0):
        if line.startswith("@@"):
            parts.append(f"at line {line.split()[2].lstrip('+').split(',')[0]}")
        elif not line.startswith(("---", "+++")):
            parts.append(line)
    more = f" | ... {len(parts) - most} more" if len(parts) > most else ""
    return " | ".join(parts[:most]) + more


class ConfigFile:
    """The config as one rollout sees it: each write checks the file is what it last saw.

    Hold a `ConfigLock` around a rollout's reads and writes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.seen: str | None = None

    def _text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise RefusalError(f"cannot read {self.path}: {error.strerror}") from None

    def read(self) -> ModelServerConfig:
        """Reads and parses the file; later writes compare against this text."""
        text = self._text()
        config = parse_config(text, self.path)
        self.seen = text
        return config

    def config(self) -> ModelServerConfig:
        """The config last read or written."""
        return parse_config(self.seen, self.path) if self.seen is not None else self.read()

    def write(self, config: ModelServerConfig) -> None:
        """Writes `config` in place, if the file is still what this rollout last read or wrote.

        Raises:
            RefusalError: The file changed since (the change is named), or the edit can't keep
                its comments; nothing is written.
        """
        now = self._text()
        if self.seen is not None and now != self.seen:
            raise RefusalError(
                f"{self.path} changed since this rollout read it ({_changes(self.seen, now)}); "
                "this step was not written: run the command again to plan from the new file"
            )
        try:
            text = edit_text(now, config)
        except RefusalError as error:
            raise RefusalError(f"{self.path}: {error}") from None
        write_text(self.path, text)
        self.seen = text


def sidecar_path(config_path: str | os.PathLike) -> Path:
    """`<config>.rollout.json`: {"MODEL": {"previous_stable": N}}."""
    return Path(f"{config_path}.rollout.json")


def read_sidecar(config_path: str | os.PathLike) -> dict:
    """The sidecar's contents ({} when there is none).

    Raises:
        RefusalError: The sidecar exists but is not a JSON object.
    """
    path = sidecar_path(config_path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RefusalError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise RefusalError(f"{path} is not a JSON object")
    return data


def write_sidecar(config_path: str | os.PathLike, data: dict) -> None:
    """Writes the sidecar durably (see `write_text`)."""
    write_text(sidecar_path(config_path), json.dumps(data, indent=2, sort_keys=True) + "\n")
