"""Fixtures of the version manager tests: known models to copy, and managers stopped after."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.core.manager import ModelManager
from tests.known_models import write_known_model

POLL_S, RETRY_S = 0.1, 0.05


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """Known models saved once; tests copy them into place (much faster than saving)."""
    root = tmp_path_factory.mktemp("templates")
    return {
        "half": write_known_model(root / "half", 1, a=0.5, b=2.0),
        "one": write_known_model(root / "one", 1, a=1.0, b=0.0),
        "good_warmup": write_known_model(root / "good", 1, warmup="good"),
        "bad_warmup": write_known_model(root / "bad", 1, warmup="bad"),
    }


@pytest.fixture
def make_manager():
    managers = []

    def make(**kwargs) -> ModelManager:
        kwargs.setdefault("file_system_poll_wait_seconds", POLL_S)
        kwargs.setdefault("load_retry_interval_s", RETRY_S)
        manager = ModelManager(**kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.stop()
