"""Suite-wide fixtures: keep the suite's disk use bounded (a tiny run's checkpoint is ~130 MB)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a worker's torch (and every process a test starts, which inherits
    # this) uses one thread, since two workers of two threads each on two cores run several times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# a folder shared by the whole session (a cached trained run) is made with this prefix, so no module removes it
SESSION_PREFIX = "session_"


@pytest.fixture(scope="module", autouse=True)
def _remove_module_temp_dirs(request: pytest.FixtureRequest,
                             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After a module whose tests all passed, delete the temporary folders its module-scoped fixtures made.

    pytest's `tmp_path_retention_policy = "failed"` removes a passing test's own tmp_path at once, but folders from
    `tmp_path_factory.mktemp` live until the session ends; the whole suite left ~11 GB per run before this.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed != failed_before:
        return  # kept for the failure's post-mortem, as pytest keeps a failed test's tmp_path
    for path in set(base.iterdir()) - before:
        if path.name.startswith(SESSION_PREFIX):
            continue
        shutil.rmtree(path, ignore_errors=True)
