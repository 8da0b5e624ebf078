"""The REST connection cap against RLIMIT_NOFILE, in child processes with their own limits."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from tests.support import ROOT

PROBE = (
    "import logging, resource; logging.basicConfig(format='%(message)s');"
    "from serving.rest.connections import fit_connection_cap;"
    "print(fit_connection_cap(2048), *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _fit(soft: int, hard: int) -> tuple[list[int], str]:
    """Runs `fit_connection_cap(2048)` where RLIMIT_NOFILE is (soft, hard): (cap, soft, hard)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, preexec_fn=limit,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [int(word) for word in done.stdout.split()], done.stderr


@pytest.fixture(autouse=True)
def _room():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs a hard RLIMIT_NOFILE of 4096 or more, this machine has {hard}")


def test_a_low_soft_limit_is_raised_to_the_hard_one():
    (cap, soft, hard), log = _fit(1024, 4096)
    assert (cap, soft, hard) == (2048, 4096, 4096)
    assert log == ""


def test_a_low_hard_limit_lowers_the_cap_with_one_line():
    (cap, soft, hard), log = _fit(512, 1024)
    assert (cap, soft, hard) == (768, 1024, 1024)
    assert log == (
        "REST: --rest_api_max_connections=2048 needs about 2304 file descriptors, but "
        "RLIMIT_NOFILE allows 1024 (hard limit 1024): serving at most 768 REST connections. "
        "Raise the limit (ulimit -n) to allow more.\n"
    )


def test_a_limit_with_room_is_left_alone():
    (cap, soft, hard), log = _fit(3000, 4096)
    assert (cap, soft, hard, log) == (2048, 3000, 4096, "")
