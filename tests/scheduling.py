"""How `make test` deals test files out to its pytest-xdist workers: groups of files whole.

`--dist=loadfile` sends each file to one worker. Here a work unit is still a file, except that
the files of a group in `GROUPS` form one unit, so they share one worker and its session
fixtures (such as one server started once instead of once per worker).
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

# Files that must share one worker, by group: each group is one unit. A file of a group carries
# `pytest.mark.xdist_group(name)` too (checked by `check_groups`), where a reader of the file
# sees it. (xdist's own `loadgroup` puts the group into the test ids, which pytest 9.2 no
# longer lets a plugin change, and runs every other test on its own, not per file.)
GROUPS = {
    # make serve's tiny server (`tiny_server`).
    "tests/client/test_api.py": "tiny_server",
    "tests/client/test_cli.py": "tiny_server",
    "tests/serving/model_servers/test_server_models.py": "tiny_server",
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test id: its file's group, or its file."""
    path = nodeid.split("::", 1)[0]
    return GROUPS.get(path, path)


def check_groups(items: list[pytest.Item]) -> None:
    """Fails the run where a file's `xdist_group` mark and `GROUPS` disagree.

    Raises:
        pytest.UsageError: naming the file, its mark and its entry.
    """
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        marked = {str(mark.args[0]) for mark in item.iter_markers("xdist_group")}
        listed = {GROUPS[path]} if path in GROUPS else set()
        if marked != listed:
            raise pytest.UsageError(
                f"{path}: marked xdist_group {sorted(marked)} but tests/scheduling.py GROUPS "
                f"lists {sorted(listed)}; make the two agree"
            )


class GroupedFileScheduling(LoadScopeScheduling):
    """`--dist=loadfile` with the files of a group as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
