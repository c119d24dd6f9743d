"""Validation: COCO-standard box and mask mAP of any model on any backend, on the device itself.

    >>> from edgeseg import Runtime
    >>> m = Runtime("yolov8n-seg.tflite").val(data="coco128-seg.yaml", conf=0.001, iou=0.7)
    >>> m.box.map, m.box.map50, m.seg.map, m.seg.maps, m.speed
    >>> print(m.table())

The model runs through the normal :class:`~edgeseg.runtime.Runtime` (same letterbox, NMS and
mask decoding users get); each image's detections are matched against its labels at once
(per-box mask crops against ground-truth masks rasterized the COCO way), so memory stays flat.
The numbers equal pycocotools' on the same predictions (see :mod:`edgeseg.eval.metrics`);
``save_json`` writes those predictions as COCO results with compressed RLE masks.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .datasets import Dataset, ImageLabels, LabelIssue, load_dataset
from ..errors import DatasetError, ImageReadError, InputError
from .metrics import APMetrics, COCOEvaluator

__all__ = ["validate", "ValMetrics"]

log = logging.getLogger("edgeseg.val")

#: COCO keeps this many detections per image and class
COCO_MAX_DETS = 100


@dataclass
class ValMetrics:
    """What :func:`validate` measured.

    - ``box``, ``seg``: :class:`~edgeseg.eval.metrics.APMetrics` (``map``, ``map50``, ``map75``, ``maps``
      per class, ...); ``seg`` is None for detection models
    - ``speed``: mean milliseconds per image: ``preprocess``, ``inference``, ``postprocess`` (the
      Runtime's stages), ``metrics`` (label rasterization and matching), ``total`` (wall time)
    - ``names``: the dataset's classes; ``images``; ``instances``; per class ``images_per_class``
      and ``instances_per_class``
    - ``issues``: labels skipped as malformed (``file:line: reason``); ``warnings``: other notes
      (e.g. model and dataset class names differ); ``json_path``: where predictions were saved
    """

    box: APMetrics
    seg: Optional[APMetrics]
    speed: Dict[str, float]
    names: Dict[int, str]
    images: int
    instances: int
    images_per_class: np.ndarray
    instances_per_class: np.ndarray
    issues: List[LabelIssue] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    json_path: Optional[Path] = None

    @property
    def results_dict(self) -> Dict[str, float]:
        """Flat summary: ``box/mAP50-95``, ``box/mAP50``, ... and ``seg/...``."""
        out = {f"box/{k}": v for k, v in self.box.as_dict().items()}
        if self.seg is not None:
            out.update({f"seg/{k}": v for k, v in self.seg.as_dict().items()})
        return out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary with per-class rows."""
        return {
            "images": self.images, "instances": self.instances, "metrics": self.results_dict,
            "speed_ms": self.speed, "classes": self.rows(), "issues": [str(i) for i in self.issues],
            "warnings": list(self.warnings),
        }

    def rows(self) -> List[Dict[str, Any]]:
        """Per-class rows (classes with ground truth): name, images, instances, P, R, AP50, AP50-95."""
        out = []
        for k, name in sorted(self.names.items()):
            if self.instances_per_class[k] == 0 and np.isnan(self.box.maps[k]):
                continue
            row: Dict[str, Any] = {"class": name, "images": int(self.images_per_class[k]),
                                   "instances": int(self.instances_per_class[k])}
            for tag, m in (("box", self.box), ("seg", self.seg)):
                if m is None:
                    continue
                row.update({f"{tag}_p": _f(m.p, k), f"{tag}_r": _f(m.r, k),
                            f"{tag}_map50": _f(m.ap50s, k), f"{tag}_map": _f(m.maps, k)})
            out.append(row)
        return out

    def table(self, per_class: bool = True) -> str:
        """The result table as text: an ``all`` row, then one row per class with ground truth."""
        groups = [("Box", self.box)] + ([("Mask", self.seg)] if self.seg is not None else [])
        head = f"{'Class':>22} {'Images':>7} {'Instances':>9}"
        for g, _ in groups:
            head += f"  {g + '(P':>7} {'R':>6} {'mAP50':>6} {'mAP50-95)':>9}"
        lines = [head]

        def fmt(name: str, imgs: int, inst: int, vals: List[Tuple[float, float, float, float]]) -> str:
            s = f"{name[:22]:>22} {imgs:>7} {inst:>9}"
            for p, r, a50, a in vals:
                s += f"  {_num(p):>7} {_num(r):>6} {_num(a50):>6} {_num(a):>9}"
            return s

        lines.append(fmt("all", self.images, self.instances, [(m.mp, m.mr, m.map50, m.map) for _, m in groups]))
        if per_class:
            for row in self.rows():
                vals = [(row[f"{t}_p"], row[f"{t}_r"], row[f"{t}_map50"], row[f"{t}_map"])
                        for t in (["box", "seg"] if self.seg is not None else ["box"])]
                lines.append(fmt(row["class"], row["images"], row["instances"], vals))
        return "\n".join(lines)

    def coco_summary(self) -> str:
        """COCO's 12 summary lines per IoU type, as pycocotools' ``summarize()`` prints them."""
        rows = [("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
                ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100), ("AP", "0.50:0.95", "large", 100),
                ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
                ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100)]
        out = []
        for title, m in (("bbox", self.box), ("segm", self.seg)):
            if m is None:
                continue
            out.append(f"{title}:")
            for (kind, iou, area, dets), v in zip(rows, m.stats):
                name = "Average Precision  (AP)" if kind == "AP" else "Average Recall     (AR)"
                out.append(f" {name} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {v:0.3f}")
        return "\n".join(out)

    def __repr__(self) -> str:
        s = f"ValMetrics(images={self.images}, box mAP50-95={self.box.map:.4f} mAP50={self.box.map50:.4f}"
        if self.seg is not None:
            s += f", mask mAP50-95={self.seg.map:.4f} mAP50={self.seg.map50:.4f}"
        return s + ")"


def _f(a: np.ndarray, k: int) -> float:
    return float(a[k]) if len(a) > k else float("nan")


def _num(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _val_runtime(runtime: Any, imgsz: Any, conf: float, iou: float, max_det: int, backend: str,
                 threads: Optional[int], multi_label: bool = True, val_masks: bool = True) -> Any:
    """A Runtime configured for validation (closing it never closes the caller's model).

    A given Runtime is viewed through :meth:`Runtime.with_options` with the validation thresholds,
    so the caller's object keeps its own settings and the model is not loaded twice; closing the
    view leaves the caller's model open.
    """
    from ..runtime import Runtime

    if isinstance(runtime, Runtime):
        size = imgsz if imgsz is not None else runtime.imgsz
        return runtime.with_options(conf=conf, iou=iou, max_det=max_det, classes=None, imgsz=size,
                                    multi_label=multi_label, val_masks=val_masks)
    if isinstance(runtime, (str, os.PathLike)):
        return Runtime(runtime, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz, backend=backend, threads=threads,
                       multi_label=multi_label, val_masks=val_masks)
    raise InputError(f"validate: expected a Runtime or a model path, found {type(runtime).__name__}")


def _batches(n: int, size: int) -> Iterator[range]:
    for i in range(0, n, size):
        yield range(i, min(n, i + size))


def validate(
    runtime: Any,
    data: Union[str, Path, Dataset],
    imgsz: Optional[Union[int, Sequence[int]]] = None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    batch: int = 1,
    split: str = "val",
    images: Optional[Union[str, Path]] = None,
    save_json: Optional[Union[str, Path]] = None,
    progress: bool = False,
    backend: str = "auto",
    threads: Optional[int] = None,
    single_label: bool = False,
) -> ValMetrics:
    """Validate a model on a dataset with COCO-standard box and mask mAP.

    Args:
        runtime: a :class:`~edgeseg.runtime.Runtime` (reused with the thresholds below; the object
            itself is left unchanged) or a model path (loaded with ``backend``/``threads``).
        data: a YOLO dataset YAML (``split`` picks the split), a COCO instances JSON (``images``:
            its image folder, found automatically in the usual places), or a loaded Dataset.
        imgsz: inference size (default: the model's). conf, iou: confidence and NMS IoU
            thresholds (0.001 and 0.7, as YOLO validation uses). max_det: detections kept per
            image by the runtime (COCO then scores the best 100 per image and class).
        batch: images passed to the runtime per call. progress: show a tqdm bar on stderr.
        save_json: write the predictions as COCO results (``image_id``, ``category_id``,
            ``bbox`` [x, y, w, h], ``score``, ``segmentation`` compressed RLE), atomically.
        single_label: one class per box (its best), as prediction reports it. By default a box
            counts for every class whose score passes ``conf`` (multi-label, the usual COCO-style
            evaluation and Ultralytics' validation NMS), which gives higher mAP at low ``conf``.

    Returns :class:`ValMetrics`. Malformed labels are listed in ``issues`` and skipped.
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    t_start = time.perf_counter()
    ds = load_dataset(data, split=split, images=images)
    for issue in ds.issues[:20]:
        log.warning("skipped label: %s", issue)
    if len(ds.issues) > 20:
        log.warning("... and %d more skipped labels", len(ds.issues) - 20)
    rt = _val_runtime(runtime, imgsz, conf, iou, max_det, backend, threads, multi_label=not single_label)
    try:
        return _run(rt, ds, batch, save_json, progress, t_start)
    finally:
        rt.close()


class _Scorer:
    """Scores results image by image: labels to targets, matching, optional COCO result entries."""

    def __init__(self, ds: Dataset, save_json: bool, bar: Any) -> None:
        self.ds, self.save_json, self.bar = ds, save_json, bar
        self.nc = len(ds.names)
        self.evaluator: Optional[COCOEvaluator] = None
        self.issues: List[LabelIssue] = list(ds.issues)
        self.speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "metrics": 0.0}
        self.results_json: List[Dict[str, Any]] = []
        self.outside = 0

    def __call__(self, idx: Sequence[int], results: Sequence[Any]) -> None:
        for i, res in zip(idx, results):
            t0 = time.perf_counter()
            self.one(self.ds[i], res)
            self.speed["metrics"] += (time.perf_counter() - t0) * 1e3
            self.bar.update(1)

    def one(self, item: Any, res: Any) -> None:
        for k in ("preprocess", "inference", "postprocess"):
            self.speed[k] += res.speed.get(k, 0.0)
        if self.evaluator is None:
            types = ("bbox", "segm") if res.masks is not None else ("bbox",)
            self.evaluator = COCOEvaluator(self.nc, types, max_dets=COCO_MAX_DETS)
        h, w = res.orig_shape
        if item.size is not None and tuple(item.size) != (h, w):
            self.issues.append(LabelIssue(str(item.path), 0, f"annotation size {item.size[1]}x{item.size[0]} differs from "
                                                              f"the image's {w}x{h}; labels are used at the image's size"))
        try:
            tg = item.targets(h, w)
        except DatasetError as exc:
            self.issues.append(LabelIssue(str(item.path), 0, f"labels skipped: {exc}"))
            tg = ImageLabels(item.path, item.image_id, np.zeros(0, np.int64), []).targets(h, w)
        keep = res.class_ids < self.nc
        self.outside += int(np.count_nonzero(~keep))
        xyxy = res.boxes.astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        dt_masks = None
        if "segm" in self.evaluator.iou_types and res.masks is not None:
            dt_masks = [(c, int(o[0]), int(o[1])) for c, o, k in zip(res.masks.crops, res.masks.offsets, keep) if k]
        self.evaluator.update(item.image_id, tg.class_ids, tg.boxes, tg.iscrowd, tg.areas, xywh[keep], res.scores[keep],
                              res.class_ids[keep], gt_masks=tg.masks, dt_masks=dt_masks)
        if self.save_json:
            self.results_json += _coco_results(res, item.image_id, self.ds, keep, xywh)


def _infer(rt: Any, img: np.ndarray) -> Tuple[Dict[str, np.ndarray], Any, np.ndarray, Dict[str, float]]:
    """Preprocess and inference of one image (the runtime's first two stages), timed."""
    t0 = time.perf_counter()
    feeds, lb = rt.preprocess(img)
    t1 = time.perf_counter()
    outputs = rt.infer(feeds)
    t2 = time.perf_counter()
    return outputs, lb, img, {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3}


def _finish(rt: Any, outputs: Dict[str, np.ndarray], lb: Any, img: np.ndarray, speed: Dict[str, float]) -> Any:
    """The runtime's postprocessing stage, timed: raw outputs -> Results."""
    t0 = time.perf_counter()
    res = rt.postprocess(outputs, lb, img)
    res.speed = {**speed, "postprocess": (time.perf_counter() - t0) * 1e3}
    return res


def _run(rt: Any, ds: Dataset, batch: int, save_json: Optional[Union[str, Path]], progress: bool,
         t_start: float) -> ValMetrics:
    """The val loop, as a three-stage pipeline: image decoding (a thread, one batch ahead),
    preprocessing and inference (this thread), postprocessing and scoring (a thread, one batch
    behind). Decoding, the backends and OpenCV release the GIL, so on a multi-core device the
    work around inference hides behind it."""
    from tqdm import tqdm

    from ..io import read_image

    nc = len(ds.names)
    warnings: List[str] = []
    model_names = dict(rt.names)
    unnamed = all(v == f"class{k}" for k, v in model_names.items())  # the runtime's stand-ins
    if model_names and not unnamed and {k: v for k, v in model_names.items() if k < nc} != \
            {k: v for k, v in ds.names.items() if k < len(model_names)}:
        warnings.append(f"the model's class names differ from the dataset's (model: {len(model_names)} classes, "
                        f"dataset: {nc}); classes are matched by index")
    bar = tqdm(total=len(ds), desc="val", unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    scorer = _Scorer(ds, save_json is not None, bar)
    reader, scoring = ThreadPoolExecutor(max_workers=1), ThreadPoolExecutor(max_workers=1)

    unreadable: List[Tuple[str, str]] = []

    def read(r: range) -> List[Tuple[int, np.ndarray]]:
        out = []
        for i in r:
            try:
                out.append((i, read_image(ds[i].path)))
            except ImageReadError as exc:  # reported, and the run goes on
                unreadable.append((str(ds[i].path), str(exc)))
                bar.update(1)
        return out

    try:
        batches = list(_batches(len(ds), batch))
        pending = reader.submit(read, batches[0]) if batches else None
        scored = None
        for bi, idx in enumerate(batches):
            loaded = pending.result()  # type: ignore[union-attr]
            pending = reader.submit(read, batches[bi + 1]) if bi + 1 < len(batches) else None
            if not loaded:
                continue
            raw = [_infer(rt, img) for _, img in loaded]
            if scored is not None:
                scored.result()  # at most one batch waits to be scored; errors surface here
            scored = scoring.submit(lambda ix, r: scorer(ix, [_finish(rt, *x) for x in r]), [i for i, _ in loaded], raw)
        if scored is not None:
            scored.result()
    finally:
        bar.close()
        reader.shutdown(wait=True)
        scoring.shutdown(wait=True)
    evaluator = scorer.evaluator
    if evaluator is None:
        raise DatasetError(f"no image could be validated: {unreadable[0][1] if unreadable else 'the dataset is empty'}")
    for path, msg in unreadable:
        scorer.issues.append(LabelIssue(path, 0, f"image skipped (its objects are not counted): {msg}"))
    if unreadable:
        warnings.append(f"{len(unreadable)} image(s) could not be read and were skipped; their objects are not counted")
    if scorer.outside:
        warnings.append(f"{scorer.outside} detections of classes beyond the dataset's {nc} classes were not scored")
    computed = evaluator.compute()
    json_path = None
    if save_json is not None:
        from ..io import atomic_write

        json_path = Path(save_json)
        with atomic_write(json_path) as tmp:
            tmp.write_text(json.dumps(scorer.results_json), encoding="utf-8")
    n = max(evaluator.images, 1)
    out_speed = {k: v / n for k, v in scorer.speed.items()}
    out_speed["total"] = (time.perf_counter() - t_start) * 1e3 / n
    for w_ in warnings:
        log.warning(w_)
    return ValMetrics(
        box=computed["bbox"], seg=computed.get("segm"), speed=out_speed, names=dict(ds.names), images=evaluator.images,
        instances=int(evaluator.instances_per_class.sum()), images_per_class=evaluator.images_per_class,
        instances_per_class=evaluator.instances_per_class, issues=scorer.issues, warnings=warnings, json_path=json_path,
    )


def _coco_results(res: Any, image_id: int, ds: Dataset, keep: np.ndarray, xywh: np.ndarray) -> List[Dict[str, Any]]:
    """COCO result entries of one image (full-precision floats, so tools see the same numbers)."""
    from ..masks import rle_strings

    h, w = res.orig_shape
    rles = rle_strings(res.masks.crops, res.masks.offsets, h, w) if res.masks is not None else None
    out = []
    for j in np.flatnonzero(keep):
        entry: Dict[str, Any] = {
            "image_id": image_id,
            "category_id": ds.category_id(int(res.class_ids[j])),
            "bbox": [float(v) for v in xywh[j]],
            "score": float(res.scores[j]),
        }
        if rles is not None:
            entry["segmentation"] = {"size": [h, w], "counts": rles[j]}
        out.append(entry)
    return out
