"""The ported TF Serving tests' shared set-up: TF Serving's test data and its servers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tfs_testdata(tmp_path_factory):
    """TF Serving's test models and config files (`tf_serving_base.write_testdata`)."""
    from tests.serving.model_servers.tf_serving_base import write_testdata

    return write_testdata(tmp_path_factory.mktemp("tfs-testdata"))


@pytest.fixture(scope="session")
def tfs_server(tmp_path_factory):
    """Upstream's `RunServer`: `tfs_server(*flags)` is the one server running with those flags."""
    from tests.serving.model_servers.tf_serving_base import RunServer

    run = RunServer(tmp_path_factory.mktemp("tfs-servers"))
    yield run
    failed = run.stop_all()
    assert not failed, "\n\n".join(failed)
