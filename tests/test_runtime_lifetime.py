"""Runtime lifetime: a Runtime and its with_options views share one backend, released with the last
of them; closing never happens under a running inference."""
from __future__ import annotations

import gc
import threading
import time

import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg.errors import InputError

pytest.importorskip("onnxruntime")
MODEL = MODELS / "yolov8n-seg-320-int8dyn.onnx"


def _released(rt: Runtime) -> bool:
    return rt.backend._sess is None  # the onnxruntime session is dropped by Backend.close()


@pytest.fixture()
def base() -> Runtime:
    require_assets(MODEL)
    return Runtime(MODEL, conf=0.5)


def test_closing_a_view_leaves_the_base_working(base: Runtime) -> None:
    view = base.with_options(conf=0.1)
    view.close()
    assert not _released(base) and len(base(image_path("bus"))) > 0
    with pytest.raises(InputError, match="closed"):
        view(image_path("bus"))
    with pytest.raises(InputError, match="fixed 320x320 input"):
        base.with_options(imgsz=256)  # a view that fails to set up holds no share of the model
    base.close()
    assert _released(base)


def test_closing_the_base_leaves_its_views_working(base: Runtime) -> None:
    view = base.with_options(conf=0.1)
    other = view.with_options(classes=[0])
    base.close()
    with pytest.raises(InputError, match="closed"):
        base(image_path("bus"))
    assert set(other(image_path("bus")).class_ids.tolist()) == {0}
    view.close()
    assert not _released(base) and len(other(image_path("bus"))) >= 3
    other.close()
    assert _released(base)
    other.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        base.with_options(conf=0.3)


def test_a_view_of_a_dropped_base_releases_the_model_when_closed() -> None:
    require_assets(MODEL)
    view = Runtime(MODEL).with_options(conf=0.3)  # the base dropped at once, as `edgeseg run --board` does
    gc.collect()
    assert not _released(view) and len(view(image_path("bus"))) > 0
    view.close()
    assert _released(view)


def test_close_waits_for_a_running_inference(base: Runtime) -> None:
    base._lock.acquire()  # an inference running in another thread holds the backend
    closer = threading.Thread(target=base.close)
    closer.start()
    time.sleep(0.2)
    assert not _released(base)
    base._lock.release()
    closer.join(5)
    assert _released(base)
