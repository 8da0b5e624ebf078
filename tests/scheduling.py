"""How `make test` deals test files out to its pytest-xdist workers: heaviest first, groups whole.

`--dist=loadfile` sends each file to one worker, in the order of how many tests a file has: the
files that start servers and train models (few tests, a minute or more each) went out last, and
one worker ran them alone at the end while the other sat idle. Here a work unit is still a file,
except that the files of a group in `GROUPS` form one unit, so they share one worker and its
session fixtures (such as one server started once instead of once per worker). Units go out
heaviest first by `COSTS`; the rest, all light, fill in after them in xdist's usual order.

A worker is given its next unit only when its current one is down to its last test (xdist
waits for two), so a file of two long tests does not take a second heavy unit at its start
while the other worker could have had it.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

# Seconds per unit (setup included), measured under load on the 2-core machine with `-n 2
# --durations=40` of the heavy folders, 2026-12-06. They only set the order: a stale or missing
# entry makes the run slower, never wrong. Refresh them when a heavy file changes much.
COSTS = {
    "tests/export/test_export.py": 235,  # with the tiny runs' training, if it comes first
    "tests/training/test_cli.py": 235,
    "tiny_server": 150,
    "tests/serving/rollout/test_gates_e2e.py": 150,
    "tests/export/test_conformance.py": 145,
    "tests/serving/model_servers/test_tf_serving_suite.py": 120,
    "tests/training/test_multi_worker.py": 100,
    "tests/serving/rollout/test_webhook.py": 100,
    "tests/serving/rollout/test_gates_prometheus.py": 90,
    "tests/training/test_localizer.py": 80,
    "tests/benchmarks/test_curve.py": 75,
    "tests/serving/rollout/test_rollout_races.py": 70,
    "tests/export/test_served.py": 70,
    "tests/serving/model_servers/test_inference.py": 60,
    "tests/docker/test_docker.py": 55,
    "tests/serving/model_servers/test_tf_serving_rest_suite.py": 45,
    "tests/serving/rollout/test_rollout.py": 35,
    "tests/training/test_shipped.py": 35,
    "tests/training/test_dcgan.py": 35,
    "tests/operations/test_prometheus.py": 35,
    "tests/training/test_unet.py": 30,
    "tests/docker/test_static_tools.py": 30,
}

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
    """`--dist=loadfile` with the files of a group as one unit, heaviest units first."""

    _sorted = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _assign_work_unit(self, node) -> None:
        # The first call comes from xdist's `schedule` once the queue is full, before any unit
        # has gone out.
        if not self._sorted:
            units = sorted(self.workqueue.items(), key=lambda unit: -COSTS.get(unit[0], 0.0))
            self.workqueue.clear()
            self.workqueue.update(units)  # a stable sort: uncosted units keep xdist's order
            self._sorted = True
        super()._assign_work_unit(node)

    def _reschedule(self, node) -> None:
        # xdist's own, topping a worker up at one pending test instead of two: a worker runs a
        # test once it knows the next one, so this costs one message, not an idle worker.
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) <= 1:
            self._assign_work_unit(node)
