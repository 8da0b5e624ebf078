"""How the rollout tool writes `models.config`: comments and other models kept, symlinks
followed, the folder fsynced, one operator at a time, and a read-only mount refused clearly.

Example:
    .venv/bin/python -m pytest tests/serving/rollout/test_config_file.py -q
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from google.protobuf import text_format

from serving.rollout import cli as rollout
from serving.rollout import config_edit as rc
from serving.rollout import config_file

ROOT = Path(__file__).resolve().parents[3]
NO_SERVER = "127.0.0.1:1"  # nothing listens here
# --seccomp-bpf stops the process only at the traced calls (without it, at every call: 10x slower).
STRACE = ["strace", "-f", "--seccomp-bpf", "-y", "-e", "trace=fsync,rename,renameat,renameat2"]

COMMENTED = """\
# The served models. Edited by hand and by `python -m serving.rollout`.
model_config_list {
  config {
    # half: y = x/2 + 2, the known-answer model.
    name: "half"
    base_path: "/models/half"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 } }  # pinned
    version_labels { key: "stable" value: 1 }
  }
  # other: kept exactly as written.
  config {
    name: "other"   base_path: "/models/other"
    model_platform: "tensorflow"
  }
}
"""


def parse(text: str) -> rc.ModelServerConfig:
    return text_format.Parse(text, rc.ModelServerConfig())


def canary_step() -> rc.ModelServerConfig:
    step = rc.canary_load(parse(COMMENTED), "half", 2, stable=1)
    return rc.with_label(step, "half", rc.CANARY, 2)


def test_an_edit_keeps_every_comment_and_the_other_models_text(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(COMMENTED)
    config_file.write_config(path, canary_step())
    text = path.read_text()
    assert parse(text) == canary_step()
    for line in COMMENTED.splitlines():
        if "#" in line:
            assert line[line.index("#") :] in text, (line, text)
    # Only half's policy and labels changed: every other line is where it was.
    old, new = COMMENTED.splitlines(), text.splitlines()
    assert new[:7] == old[:7] and new[-6:] == old[-6:], text


def test_an_edit_that_would_drop_a_comment_is_refused(tmp_path):
    path = tmp_path / "models.config"
    inner = COMMENTED.replace(
        "model_version_policy { specific { versions: 1 } }",
        "model_version_policy {\n      # only these\n      specific { versions: 1 }\n    }",
    )
    path.write_text(inner)
    dropped = r"half's model_version_policy .* line 9: '# only these'"
    with pytest.raises(rc.RefusalError, match=dropped):
        config_file.write_config(path, canary_step())
    assert path.read_text() == inner


def configmap(tmp_path: Path, text: str) -> tuple[Path, Path]:
    """The layout of a Kubernetes ConfigMap volume: models.config -> ..data/models.config."""
    stamp = tmp_path / "cm" / "..2026_12_05_13_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "models.config").write_text(text)
    (tmp_path / "cm" / "..data").symlink_to(stamp.name)
    link = tmp_path / "cm" / "models.config"
    link.symlink_to("..data/models.config")
    return link, stamp / "models.config"


def test_a_symlinked_config_is_written_through_the_link(tmp_path):
    link, target = configmap(tmp_path, COMMENTED)
    config_file.write_config(link, canary_step())
    assert link.is_symlink() and os.readlink(link) == "..data/models.config"
    assert parse(target.read_text()) == canary_step()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch the syscalls")
def test_the_rename_is_followed_by_an_fsync_of_the_folder(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(COMMENTED)
    script = (
        "import sys; from google.protobuf import text_format;"
        "from serving.rollout import config_edit as rc, config_file;"
        "c = text_format.Parse(open(sys.argv[2]).read(), rc.ModelServerConfig());"
        "config_file.write_config(sys.argv[1], c)"
    )
    new = tmp_path / "new.txt"
    new.write_text(text_format.MessageToString(canary_step()))
    trace = subprocess.run(
        [*STRACE, sys.executable, "-c", script, str(path), str(new)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trace.returncode == 0, trace.stderr[-2000:]
    calls = [line for line in trace.stderr.splitlines() if "fsync(" in line or "rename" in line]
    renames = [i for i, line in enumerate(calls) if "rename" in line and "models.config" in line]
    assert renames, calls
    folder_syncs = [
        i for i, line in enumerate(calls) if "fsync(" in line and f"<{tmp_path}>)" in line
    ]
    assert folder_syncs and folder_syncs[-1] > renames[-1], calls
    assert parse(path.read_text()) == canary_step()


CANARIED = COMMENTED.replace(
    'version_labels { key: "stable" value: 1 }',
    'version_labels { key: "stable" value: 1 }\n    version_labels { key: "canary" value: 2 }',
)


@contextlib.contextmanager
def held_lock(path: Path, holder: str):
    """Holds the rollout tool's lock on `path` as another operator would."""
    with open(config_file.lock_path(path), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(holder)
        handle.flush()
        yield handle


def test_a_held_lock_refuses_the_second_operator_after_its_timeout(tmp_path, capsys):
    path = tmp_path / "models.config"
    path.write_text(CANARIED)
    flags = ["--server", NO_SERVER, "--config", str(path), "--lock_timeout", "1"]
    with held_lock(path, "pid 4242: abort half"):
        t0 = time.monotonic()
        code = rollout.main([*flags, "abort", "half"])
        waited = time.monotonic() - t0
    out, err = capsys.readouterr()
    # A notice that it waits, then the refusal in one line.
    assert code == 2 and out == "" and err.count("\n") == 2, err
    refusal = err.splitlines()[-1]
    assert f"{config_file.lock_path(path)} is held by pid 4242: abort half" in refusal, err
    assert "gave up after 1 s" in refusal and waited >= 1.0
    assert path.read_text() == CANARIED  # untouched


def test_a_second_operator_waits_for_the_lock_then_goes_on(tmp_path, capsys):
    path = tmp_path / "models.config"
    path.write_text(CANARIED)
    flags = ["--server", NO_SERVER, "--config", str(path), "--timeout", "2"]
    with held_lock(path, "pid 4242: canary half 2") as handle:
        threading.Timer(1.0, fcntl.flock, (handle, fcntl.LOCK_UN)).start()
        code = rollout.main([*flags, "--lock_timeout", "60", "abort", "half"])
    _, err = capsys.readouterr()
    # It went on once the lock was free: the reload failed (no server) and the file is back.
    assert "waiting for the lock" in err and "pid 4242: canary half 2" in err, err
    assert code == 1 and "UNAVAILABLE" in err, err
    assert path.read_text() == CANARIED
    assert not config_file.lock_path(path).exists()  # removed on release


def test_a_read_only_config_is_refused_before_anything_changes(tmp_path, capsys):
    link, target = configmap(tmp_path, CANARIED)
    folder = target.parent
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        code = rollout.main(["--server", NO_SERVER, "--config", str(link), "abort", "half"])
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"{target} is on a read-only file system" in err
    assert "ConfigMap" in err
    assert target.read_text() == CANARIED


def test_the_lock_excludes_other_holders(tmp_path):
    # Read-modify-write of a counter from four threads under the lock, each holder removing the
    # lock file on release: two holders at once would lose an increment.
    path = tmp_path / "models.config"
    path.write_text("0")

    def bump(worker: int) -> None:
        for _ in range(25):
            with config_file.ConfigLock(path, 60.0, f"worker {worker}", say=lambda _: None):
                value = int(path.read_text())
                time.sleep(0.001)
                path.write_text(str(value + 1))

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert path.read_text() == "100"
    assert not config_file.lock_path(path).exists()
