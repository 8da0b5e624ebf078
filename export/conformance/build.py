"""Compiles `savedmodel_check.cc` against the installed TensorFlow wheel, once per source and wheel.

The binary is cached under `$XDG_CACHE_HOME/tf-serving-stack/conformance/<key>/` (by default
`~/.cache/...`), where the key hashes the C++ source, the TensorFlow version and the wheel's
folder, so editing the source or changing the wheel builds it again and nothing stale runs.

Example:
    from export.conformance.build import build
    binary = build()  # about 10 s the first time, then a cache hit
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from training.errors import UserError

SOURCE = Path(__file__).with_name("savedmodel_check.cc")
BINARY_NAME = "savedmodel_check"
COMPILER = "g++"
# The wheel's C++ libraries: the framework (loader, sessions, protobuf) and the op kernels.
LIBRARIES = ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2")


class ConformanceError(UserError):
    """The harness cannot run: no compiler, a failed build, a bad version or run folder."""


def cache_root() -> Path:
    """The folder under which built binaries are kept (XDG_CACHE_HOME is honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tf-serving-stack" / "conformance"


def compile_command(output: Path) -> list[str]:
    """The g++ command line that builds the checker against the installed TensorFlow wheel."""
    tf = _tensorflow()
    lib = Path(tf.sysconfig.get_lib()).resolve()
    return [
        COMPILER,
        *tf.sysconfig.get_compile_flags(),
        # The checker's speed is TensorFlow's; an unoptimised build compiles fastest. TF's
        # headers warn about their own deprecations, which say nothing about this program.
        "-O0",
        "-w",
        str(SOURCE),
        "-o",
        str(output),
        # Without --no-as-needed the linker drops libtensorflow_cc.so.2, because no symbol is
        # taken from it directly, and DirectSession (registered by its static initialisers)
        # never exists: NewSession then fails with "No session factory registered".
        "-Wl,--no-as-needed",
        f"-L{lib}",
        *(f"-l:{name}" for name in LIBRARIES),
        f"-Wl,-rpath,{lib}",
    ]


def build_key() -> str:
    """A short hash of everything the binary depends on: source, TF version and wheel folder."""
    tf = _tensorflow()
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(tf.__version__.encode())
    digest.update(str(Path(tf.sysconfig.get_lib()).resolve()).encode())
    return digest.hexdigest()[:16]


def build(cache: Path | None = None) -> Path:
    """Returns the checker binary, compiling it first when the cache has none for this key.

    A cached binary runs without a compiler; only a build needs g++.

    Args:
        cache: the cache root; `cache_root()` by default.

    Raises:
        ConformanceError: no g++ on PATH (Debian's `g++` package), or the build failed.
    """
    folder = (cache or cache_root()) / build_key()
    binary = folder / BINARY_NAME
    if binary.is_file():
        return binary
    if shutil.which(COMPILER) is None:
        raise ConformanceError(
            f"no C++ compiler: {COMPILER} is not on PATH; install Debian's g++ package "
            "(apt-get install g++)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConformanceError(f"cannot create the build cache {folder}: {exc.strerror}") from None
    # Two processes may build at once: each writes its own file and renames it into place.
    partial = folder / f".{BINARY_NAME}-{os.getpid()}"
    result = subprocess.run(compile_command(partial), capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        raise ConformanceError(
            f"{COMPILER} could not build {SOURCE.name}: {(errors or ['(no message)'])[0]}"
        )
    partial.replace(binary)
    return binary


def _tensorflow():
    from common.quiet import import_tensorflow

    return import_tensorflow()
