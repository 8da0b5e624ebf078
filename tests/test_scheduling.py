"""`tests/scheduling.py`'s tables name real files, and a grouped file without its mark (or a
mark without its entry) stops the run instead of splitting a shared server across workers."""

from pathlib import Path

import pytest

from tests import scheduling

ROOT = Path(__file__).resolve().parents[1]


def test_every_grouped_or_costed_file_exists():
    """Catches a renamed or deleted test file left in the tables: its group or its place in
    the order would be lost without a word."""
    groups = set(scheduling.GROUPS.values())
    for path in scheduling.GROUPS:
        assert (ROOT / path).is_file(), path
    for unit in scheduling.COSTS:
        assert unit in groups or (ROOT / unit).is_file(), unit
        assert unit not in scheduling.GROUPS, f"{unit} is costed as its group, not alone"


def test_units_are_files_or_groups():
    grouped = next(iter(scheduling.GROUPS))
    assert scheduling.unit_of(f"{grouped}::test_x[a@b]") == scheduling.GROUPS[grouped]
    assert scheduling.unit_of("tests/x/test_y.py::Case::test_z") == "tests/x/test_y.py"


class _Item:
    """What `check_groups` reads of a collected item: its id and its xdist_group marks."""

    def __init__(self, nodeid: str, *groups: str):
        self.nodeid = nodeid
        self._marks = [pytest.mark.xdist_group(g).mark for g in groups]

    def iter_markers(self, name: str):
        return iter(self._marks if name == "xdist_group" else [])


def test_a_mark_and_its_entry_must_agree():
    grouped, group = next(iter(scheduling.GROUPS.items()))
    scheduling.check_groups([_Item(f"{grouped}::t", group), _Item("tests/a/test_b.py::t")])
    with pytest.raises(pytest.UsageError, match=r"marked xdist_group \[\] but .* lists \["):
        scheduling.check_groups([_Item(f"{grouped}::t")])
    with pytest.raises(pytest.UsageError, match=r"test_b.py: marked xdist_group \['other'\]"):
        scheduling.check_groups([_Item("tests/a/test_b.py::t", "other")])
