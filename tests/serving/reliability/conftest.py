"""The reliability suite: every test in this folder carries the `reliability` marker.

Run it alone with `pytest -m reliability` (it is part of `make test`). Tests elsewhere that
cover one of its categories carry the marker too.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)
