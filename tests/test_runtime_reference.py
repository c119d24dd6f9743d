"""The runtime reproduces Ultralytics' own detections on real exports (reference JSON files)."""
from __future__ import annotations

import numpy as np
import pytest

from _assets import MODELS, image_path, load_reference, require_assets
from edgeseg import Runtime
from edgeseg.masks import rle_decode

IMAGES = ["bus", "zidane", "000000000036", "000000000042", "000000000049", "000000000061"]
MODEL_FILES = ["yolov8n-seg-320-int8dyn.onnx", "yolov8n-seg-640-int8w.tflite"]

#: (box px, score) tolerance against the reference. The dynamic-range int8 TFLite model quantizes its
#: activations at run time, and LiteRT's own kernels disagree on it: on bus.jpg, the identical input
#: tensor gives the bus at x1 17.95 / y1 224.78 with XNNPACK, 25.00 / 228.76 with the builtin kernels
#: and 16.69 / 226.76 with the reference kernels (score 0.873 / 0.886 / 0.889), and changing 0.1% of the
#: input pixels by one gray level moves y1 by up to 4.6 px (ai-edge-litert 2.3.0). The reference was made
#: with another TFLite build, so its errors (at most 4.46 px and 0.020 here) are the runtime library's
#: numerics, not the decoding; test_int8w_tflite_kernels_disagree_by_more_than_the_default_tolerance
#: keeps that evidence checked. Float-activation models (the ONNX) match within 1 px.
TOLERANCE = {"yolov8n-seg-640-int8w.tflite": (5.0, 0.025)}
DEFAULT_TOLERANCE = (1.5, 0.01)


@pytest.fixture(scope="module", params=MODEL_FILES)
def runtime(request):
    path = MODELS / request.param
    require_assets(path)
    with Runtime(path, conf=0.25, iou=0.7) as rt:
        yield rt


def match(res, ref_dets):
    """One-to-one match of reference detections to ours: same class, highest box IoU."""
    used = set()
    pairs = []
    for d in sorted(ref_dets, key=lambda d: -d["score"]):
        rb = np.array(d["xyxy"], np.float32)
        best, best_iou = None, 0.0
        for i in range(len(res)):
            if i in used or res.class_ids[i] != d["class_id"]:
                continue
            b = res.boxes[i]
            iw = max(0.0, min(b[2], rb[2]) - max(b[0], rb[0]))
            ih = max(0.0, min(b[3], rb[3]) - max(b[1], rb[1]))
            inter = iw * ih
            iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (rb[2] - rb[0]) * (rb[3] - rb[1]) - inter)
            if iou > best_iou:
                best, best_iou = i, iou
        assert best is not None, f"reference detection {d['class_id']} {d['score']:.3f} {d['xyxy']} has no match"
        used.add(best)
        pairs.append((d, best))
    return pairs


@pytest.mark.parametrize("image", IMAGES)
def test_matches_ultralytics_reference(runtime, image):
    stem = runtime.path.stem
    ref = load_reference(stem, image)["detections"]
    res = runtime(image_path(image))
    box_tol, score_tol = TOLERANCE.get(runtime.path.name, DEFAULT_TOLERANCE)
    assert sorted(res.class_ids.tolist()) == sorted(d["class_id"] for d in ref)
    for d, i in match(res, ref):
        assert abs(float(res.scores[i]) - d["score"]) <= score_tol
        assert np.abs(res.boxes[i] - np.array(d["xyxy"])).max() <= box_tol
        gt = rle_decode(d["mask_rle"])
        ours = res.masks.mask(i)
        iou = (gt & ours).sum() / max((gt | ours).sum(), 1)
        assert iou >= 0.95, f"mask IoU {iou:.4f} for class {d['class_id']} on {image}"


def test_full_int8_tflite_finds_the_bus():
    path = MODELS / "yolov8n-seg-640-fullint8.tflite"
    require_assets(path)
    with Runtime(path) as rt:
        assert rt.input_spec.quantized and rt.input_spec.dtype == np.int8
        res = rt(image_path("bus"))
    assert res.masks is not None and len(res.masks) == len(res)
    buses = res[res.class_ids == 5]
    assert len(buses) >= 1
    # the bus spans most of the image width
    b = buses.boxes[np.argmax(buses.scores)]
    assert b[2] - b[0] > 600
    assert buses.masks.areas().max() > 100_000


def test_retina_masks_are_cropped_to_the_box_at_source_resolution():
    path = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(path)
    with Runtime(path, retina_masks=True) as rt:
        res = rt(image_path("bus"))
    ref = load_reference("yolov8n-seg-320-int8dyn", "bus")["detections"]
    for d, i in match(res, ref):
        x0, y0 = res.masks.offsets[i]
        h, w = res.masks.crops[i].shape
        b = res.boxes[i]
        assert x0 >= np.floor(b[0]) and y0 >= np.floor(b[1])
        assert x0 + w <= np.ceil(b[2]) + 1 and y0 + h <= np.ceil(b[3]) + 1
        gt = rle_decode(d["mask_rle"])
        ours = res.masks.mask(i)
        assert (gt & ours).sum() / (gt | ours).sum() >= 0.95


def test_list_input_and_array_input_agree():
    path = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(path)
    import cv2

    with Runtime(path) as rt:
        a, b = rt([image_path("bus"), cv2.imread(str(image_path("bus")))])
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.path.endswith("bus.jpg") and b.path is None
    assert set(a.speed) == {"preprocess", "inference", "postprocess"}


def test_one_runtime_shared_between_threads_gives_the_same_results():
    path = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(path)
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    images = [cv2.imread(str(image_path(n))) for n in ("bus", "zidane", "000000000036", "000000000042")]
    with Runtime(path) as rt:
        serial = [rt(im) for im in images]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(rt, images * 3))
    for i, res in enumerate(parallel):
        ref = serial[i % 4]
        np.testing.assert_array_equal(res.boxes, ref.boxes)
        assert [c.tobytes() for c in res.masks.crops] == [c.tobytes() for c in ref.masks.crops]


def test_with_options_shares_the_model_and_keeps_the_original():
    path = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(path)
    with Runtime(path, conf=0.5) as rt:
        low = rt.with_options(conf=0.1, classes=[0])
        assert low.backend is rt.backend
        res_low, res = low(image_path("bus")), rt(image_path("bus"))
        assert set(res_low.class_ids.tolist()) == {0} and len(res_low) >= 3
        assert res.scores.min() > 0.5 and rt.conf == 0.5
        low.close()
        assert len(rt(image_path("bus"))) == len(res)  # the shared model is still open
        with pytest.raises(Exception, match="unknown options"):
            rt.with_options(threads=2)


def test_int8w_tflite_kernels_disagree_by_more_than_the_default_tolerance():
    """The evidence behind TOLERANCE: LiteRT's XNNPACK and builtin kernels, fed the identical input
    tensor, put the bus of bus.jpg more than 2 px apart (if this starts failing, the runtime's kernels
    agree again: tighten the int8w tolerance back to the default)."""
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert import interpreter as litert

    path = MODELS / "yolov8n-seg-640-int8w.tflite"
    require_assets(path)
    with Runtime(path) as rt:
        feeds, lb = rt.preprocess(__import__("cv2").imread(str(image_path("bus"))))
        ours = rt(image_path("bus"))
    x = next(iter(feeds.values()))

    def bus_box(resolver):
        it = litert.Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        p = next(it.get_tensor(d["index"]) for d in it.get_output_details() if len(d["shape"]) == 3)[0]
        cls = p[4:84]
        j = int(np.argmax(np.where(cls.argmax(0) == 5, cls.max(0), 0)))
        cx, cy, w, h = p[:4, j] * 640
        return lb.to_source(np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], np.float32))[0]

    xnnpack = bus_box(litert.OpResolverType.AUTO)
    builtin = bus_box(litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    spread = float(np.abs(xnnpack - builtin).max())
    np.testing.assert_allclose(ours.boxes[ours.class_ids == 5][0], xnnpack, atol=1e-3)  # we decode what XNNPACK gives
    assert spread > DEFAULT_TOLERANCE[0], f"LiteRT kernels now agree within {spread:.2f} px"
    assert spread >= TOLERANCE[path.name][0] - 1.0
