"""edgeseg.eval.metrics against pycocotools (and faster-coco-eval) on synthetic ground truth and predictions.

Ground truth: random polygons (some objects in several parts, some crowd regions given as RLE);
predictions: jittered copies of the ground truth with random (partly tied) scores, wrong classes,
pure false positives and more than 100 detections per image and class. Both sides get the same
data; pycocotools gets it as COCO JSON dicts.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from edgeseg.eval.datasets.polygon import polygons_mask
from edgeseg.masks import rle_encode_counts, rle_to_string
from edgeseg.eval.metrics import COCOEvaluator, box_iou_xywh, mask_iou_crops, match_detections

pycocotools = pytest.importorskip("pycocotools", reason="pycocotools (a dev dependency) is needed for the reference numbers")
from pycocotools import mask as mask_util  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NC = 4


def _random_polygon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(3, min(h, w) / 3)
    k = int(rng.integers(3, 12))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * rng.uniform(0.5, 1.0, k)
    return np.stack([np.clip(cx + rad * np.cos(ang), 0, w), np.clip(cy + rad * np.sin(ang), 0, h)], 1)


def _crop_of(full: np.ndarray):
    ys, xs = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
    if len(ys) == 0:
        return np.zeros((0, 0), bool), 0, 0
    return full[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1].copy(), int(xs[0]), int(ys[0])


def _make_case(seed: int, n_images: int = 12, crowd: bool = True):
    """Synthetic GT + predictions; returns (gt_json, dt_json, per-image records for edgeseg)."""
    import cv2

    rng = np.random.default_rng(seed)
    images, anns, dts, records = [], [], [], []
    aid = 1
    for img_id in range(1, n_images + 1):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 160))
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.jpg"})
        g_cls, g_box, g_crowd, g_area, g_mask = [], [], [], [], []
        n_gt = int(rng.integers(0, 7)) if img_id % 5 else 0  # some images without objects
        for _ in range(n_gt):
            c = int(rng.integers(0, NC - 1))  # the last class never has ground truth
            parts = [_random_polygon(rng, h, w) for _ in range(1 if rng.random() < 0.8 else 2)]
            is_crowd = crowd and rng.random() < 0.12
            if is_crowd:  # crowd regions come as RLE, like COCO's
                full = np.zeros((h, w), np.uint8)
                cv2.fillPoly(full, [np.round(p).astype(np.int32) for p in parts], 1)
                rle = mask_util.encode(np.asfortranarray(full))
                rle["counts"] = rle["counts"].decode()
                seg = rle
                mask = _crop_of(full.astype(bool))
                box = [float(v) for v in mask_util.toBbox(rle)]
            else:
                seg = [p.ravel().tolist() for p in parts]
                mask = polygons_mask(parts, h, w)
                pts = np.concatenate(parts)
                box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() - pts[:, 0].min(), pts[:, 1].max() - pts[:, 1].min()]
            area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg))
            anns.append({"id": aid, "image_id": img_id, "category_id": c, "segmentation": seg, "bbox": box,
                         "area": area, "iscrowd": int(is_crowd)})
            aid += 1
            g_cls.append(c), g_box.append(box), g_crowd.append(is_crowd), g_area.append(area), g_mask.append(mask)
        # predictions: jittered copies of the objects, wrong classes, false positives; many per class
        d_box, d_score, d_cls, d_mask = [], [], [], []
        sources = [(a["bbox"], g_cls[i], a["segmentation"]) for i, a in enumerate(anns[len(anns) - n_gt:])]
        n_dt = int(rng.integers(0, 8)) + (130 if img_id == 3 else 0)
        for j in range(n_dt):
            full = np.zeros((h, w), np.uint8)
            if sources and rng.random() < 0.85:
                (bx, by, bw, bh), c, seg = sources[int(rng.integers(len(sources)))]
                if rng.random() < 0.1:
                    c = int(rng.integers(0, NC))
                s = rng.uniform(0.85, 1.15, 2)
                dx, dy = rng.normal(0, 0.04 * bw + 0.5), rng.normal(0, 0.04 * bh + 0.5)
                parts = [np.asarray(p).reshape(-1, 2) for p in seg] if isinstance(seg, list) else []
                centre = np.array([bx + bw / 2, by + bh / 2])
                cv2.fillPoly(full, [np.round((p - centre) * s + centre + (dx, dy)).astype(np.int32) for p in parts], 1)
                bx, by = bx + dx - bw * (s[0] - 1) / 2, by + dy - bh * (s[1] - 1) / 2
                bw, bh = bw * s[0], bh * s[1]
            else:
                c = int(rng.integers(0, NC))
                bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
                bx, by = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            x0, y0 = max(0.0, bx), max(0.0, by)
            x1, y1 = min(float(w), bx + bw), min(float(h), by + bh)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            if not full.any():
                cv2.ellipse(full, ((float(x0 + x1) / 2, float(y0 + y1) / 2), (float(x1 - x0), float(y1 - y0)), 0.0), 1, -1)
            if rng.random() < 0.05:
                full[:] = 0  # an empty mask
            score = float(np.float32(rng.choice([0.5, 0.25]) if rng.random() < 0.2 else rng.uniform(0.001, 1)))
            box = np.array([x0, y0, x1, y1], np.float32)
            d_box.append(box), d_score.append(score), d_cls.append(c), d_mask.append(_crop_of(full.astype(bool)))
        for box, score, c, m in zip(d_box, d_score, d_cls, d_mask):
            x0, y0, x1, y1 = (float(v) for v in box)
            counts = rle_encode_counts(m[0], m[1], m[2], h, w)
            dts.append({"image_id": img_id, "category_id": c, "score": score, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "segmentation": {"size": [h, w], "counts": rle_to_string(counts)}})
        xyxy = np.array(d_box, np.float32).reshape(-1, 4).astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
        records.append(dict(image_id=img_id, gt_class_ids=np.array(g_cls, np.int64), gt_boxes=np.array(g_box).reshape(-1, 4),
                            gt_iscrowd=np.array(g_crowd, bool), gt_areas=np.array(g_area), gt_masks=g_mask,
                            dt_boxes=xywh, dt_scores=np.array(d_score), dt_class_ids=np.array(d_cls, np.int64), dt_masks=d_mask))
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(NC)]}
    return gt, dts, records


def _pycoco(gt: dict, dts: list, iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in dts])
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _ours(records: list) -> dict:
    ev = COCOEvaluator(NC)
    for r in reversed(records):  # any order in, image-id order out
        ev.update(**r)
    return ev.compute()


@pytest.mark.parametrize("seed,crowd", [(0, False), (1, True), (2, True), (3, True)])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ap_equals_pycocotools(seed: int, crowd: bool, iou_type: str) -> None:
    gt, dts, records = _make_case(seed, crowd=crowd)
    ref = _pycoco(gt, dts, iou_type)
    ours = _ours(records)[iou_type]
    assert ours.map == pytest.approx(ref.stats[0], abs=1e-9)
    assert ours.map50 == pytest.approx(ref.stats[1], abs=1e-9)
    assert ours.map75 == pytest.approx(ref.stats[2], abs=1e-9)
    assert ours.mar100 == pytest.approx(ref.stats[8], abs=1e-9)
    # all 12 COCO numbers: area ranges (small/medium/large) and AR at 1, 10, 100 detections
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-9)
    # per class: COCO's precision array, class by class
    prec = ref.eval["precision"][:, :, :, 0, 2]
    for k in range(NC):
        pk = prec[:, :, k]
        if (pk > -1).any():
            assert ours.maps[k] == pytest.approx(pk.mean(), abs=1e-9)
            assert ours.ap50s[k] == pytest.approx(pk[0].mean(), abs=1e-9)
        else:
            assert np.isnan(ours.maps[k])


def test_faster_coco_eval_agrees() -> None:
    fce = pytest.importorskip("faster_coco_eval", reason="faster-coco-eval (a dev dependency) not installed")
    gt, dts, records = _make_case(5, crowd=True)
    ours = _ours(records)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = fce.COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in dts])
        for t in ("bbox", "segm"):
            ev = fce.COCOeval_faster(coco_gt, coco_dt, t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ours[t].map == pytest.approx(ev.stats[0], abs=1e-6)
            assert ours[t].map50 == pytest.approx(ev.stats[1], abs=1e-6)


def test_box_iou_matches_pycocotools() -> None:
    rng = np.random.default_rng(7)
    dt = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(0, 30, (20, 2))], 1)
    gt = np.concatenate([rng.uniform(0, 50, (9, 2)), rng.uniform(0, 30, (9, 2))], 1)
    crowd = rng.random(9) < 0.3
    ref = mask_util.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    np.testing.assert_array_equal(box_iou_xywh(dt, gt, crowd), ref)


def test_mask_iou_matches_pycocotools_and_prunes_safely() -> None:
    import cv2

    rng = np.random.default_rng(3)
    h, w = 90, 120
    fulls = []
    for _ in range(14):
        m = np.zeros((h, w), np.uint8)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        cv2.ellipse(m, ((cx, cy), (rng.uniform(5, 60), rng.uniform(5, 60)), rng.uniform(0, 180)), 1, -1)
        fulls.append(m)
    dt, gt = fulls[:8], fulls[8:]
    crowd = np.array([0, 1, 0, 0, 1, 0], bool)
    enc = lambda ms: [mask_util.encode(np.asfortranarray(m)) for m in ms]  # noqa: E731
    ref = mask_util.iou(enc(dt), enc(gt), crowd.astype(np.uint8).tolist())
    crops = lambda ms: [_crop_of(m.astype(bool)) for m in ms]  # noqa: E731
    exact = mask_iou_crops(crops(dt), crops(gt), crowd)
    np.testing.assert_array_equal(exact, ref)
    pruned = mask_iou_crops(crops(dt), crops(gt), crowd, min_iou=0.5)
    np.testing.assert_array_equal(pruned[ref >= 0.5], ref[ref >= 0.5])
    assert (pruned[ref < 0.5] <= ref[ref < 0.5]).all()


@pytest.mark.parametrize("ious,ignore,crowd,expect", [
    # the higher IoU wins; a matched ground truth is not matched again
    ([[0.6, 0.8], [0.9, 0.55]], [0, 0], [0, 0], [[1, 1]]),
    # ties go to the later ground truth
    ([[0.7, 0.7]], [0, 0], [0, 0], [[1]]),
    # a regular match is preferred over a better ignored (crowd) one; crowds absorb many
    ([[0.6, 0.9], [0.2, 0.9], [0.1, 0.95]], [0, 1], [0, 1], [[1, 1, 1]]),
    # below the threshold: no match
    ([[0.49]], [0], [0], [[0]]),
])
def test_matching_rules(ious, ignore, crowd, expect) -> None:
    m, ig = match_detections(np.array(ious, float), np.array(ignore, bool), np.array(crowd, bool), np.array([0.5]))
    np.testing.assert_array_equal(m.astype(int), np.array(expect))
    if len(ignore) == 2 and ignore[1]:
        np.testing.assert_array_equal(ig[0], [False, True, True])


def test_ground_truth_as_predictions_scores_one_and_empty_scores_nan() -> None:
    from _assets import ASSETS, require_assets
    from edgeseg.eval.datasets import load_dataset

    data = ASSETS / "datasets" / "coco8-seg.yaml"
    require_assets(data)
    ds = load_dataset(data)
    ev, empty = COCOEvaluator(80), COCOEvaluator(80)
    for it in ds:
        t = it.targets(480, 640)
        ev.update(it.image_id, t.class_ids, t.boxes, t.iscrowd, t.areas, t.boxes, np.linspace(1, 0.5, len(t)),
                  t.class_ids, gt_masks=t.masks, dt_masks=t.masks)
        empty.update(it.image_id, t.class_ids[:0], t.boxes[:0], t.iscrowd[:0], t.areas[:0], t.boxes[:0], [], [],
                     gt_masks=[], dt_masks=[])
    for m in ev.compute().values():
        assert m.map == m.map50 == m.mar100 == 1.0
    for m in empty.compute().values():
        assert np.isnan(m.map) and (m.stats == -1).all()
