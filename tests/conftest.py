"""Suite-wide hooks. Without ../shared/assets beside the repo (a contributor's clone), the tests that need
its third-party files (Ultralytics weights, COCO images, reference detections) skip; their skips are
reported as one line instead of one per test file."""
from __future__ import annotations

from typing import Any

import pytest

from _assets import ASSETS

# PaddlePaddle 3.3 crashes the process when it is first imported after TensorFlow 2.21 (coremltools
# imports TensorFlow when it is installed); the paddle backend refuses in that order, so the suite,
# which runs both in one process, imports paddle first when it is installed
try:
    import importlib.util as _util

    if _util.find_spec("paddle") is not None and _util.find_spec("tensorflow") is not None:
        import paddle  # noqa: F401
except Exception:  # a broken paddle install: its own tests report it
    pass

ONE_REASON = (f"needs third-party test files from {ASSETS} (Ultralytics weights, COCO images and reference "
              "detections), which is not beside this checkout")


def _one_line(report: Any) -> None:
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3 and not ASSETS.exists():
        reason = str(report.longrepr[2])
        if "shared/assets" in reason or str(ASSETS) in reason or "coco8-seg dataset not found" in reason:
            report.longrepr = ("tests/_assets.py", 0, "Skipped: " + ONE_REASON)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):  # type: ignore[no-untyped-def]
    outcome = yield
    _one_line(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _one_line(outcome.get_result())
