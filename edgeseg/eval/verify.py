"""Compare two models (e.g. a ``.pt`` and its export) on the same images: does the export keep
its accuracy?

Both models run through :class:`~edgeseg.runtime.Runtime` (any formats and backends). Where the
inputs allow it, both receive the *same* letterboxed tensor (made by the model with the fixed
input size, else by the reference), so the comparison measures the conversion, not the
letterbox. Detections are matched greedily (reference by descending score; same class, best box
IoU >= 0.5), then per image: matched count, max box error (source pixels, max over xyxy
coordinates), max score error, min and pixel-weighted mask IoU.

Thresholds by candidate precision (read from its ``quantization`` metadata, or given):

========= ======================== ============ ============== ==================
precision box error (source px)    score error  mask IoU (min) borderline margin
========= ======================== ============ ============== ==================
fp32      1.0                      0.005        0.99           0.005
fp16      2.0                      0.02         0.97           0.02
int8      4.0 or 5% of the box     0.10         0.85           0.10
========= ======================== ============ ============== ==================

(int8: the larger of 4 px and 5% of the reference box's longer side, so small boxes are
not held to the pixel error of a model whose input is a fraction of the photo's size.)

A detection found by only one model fails the image unless its score is within the margin of
the confidence threshold (a borderline detection that the other model scored just below it).
This module is torch-free: the torch side appears only as a backend the Runtime may pick.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, list_files, read_image
from ..masks import Masks
from ..results import Results

__all__ = ["Thresholds", "THRESHOLDS", "ImageReport", "VerifyReport", "verify", "match_detections", "list_images"]

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Thresholds:
    """Pass limits: ``box_px`` max box-coordinate error in source pixels (or ``box_rel`` times
    the reference box's longer side, when that is larger), ``score`` max score difference,
    ``mask_iou`` min mask IoU of every matched pair, ``margin`` the score band above ``conf``
    in which an unmatched detection counts as borderline (not a failure)."""

    box_px: float
    score: float
    mask_iou: float
    margin: float
    box_rel: float = 0.0


THRESHOLDS: Dict[str, Thresholds] = {
    "fp32": Thresholds(box_px=1.0, score=0.005, mask_iou=0.99, margin=0.005),
    "fp16": Thresholds(box_px=2.0, score=0.02, mask_iou=0.97, margin=0.02),
    "int8": Thresholds(box_px=4.0, score=0.10, mask_iou=0.85, margin=0.10, box_rel=0.05),
}


@dataclass
class ImageReport:
    """The comparison on one image. Errors are ``None`` when nothing matched."""

    image: str
    reference: int
    candidate: int
    matched: int
    unmatched_reference: List[Dict[str, Any]] = field(default_factory=list)
    unmatched_candidate: List[Dict[str, Any]] = field(default_factory=list)
    borderline: int = 0
    max_box_error: Optional[float] = None
    max_score_error: Optional[float] = None
    min_mask_iou: Optional[float] = None
    mask_iou: Optional[float] = None  # pixel-weighted over all matched pairs
    same_input: bool = True
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class VerifyReport:
    reference: str
    candidate: str
    precision: str
    thresholds: Thresholds
    conf: float
    iou: float
    images: List[ImageReport]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.images)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "precision": self.precision,
            "thresholds": asdict(self.thresholds),
            "conf": self.conf,
            "iou": self.iou,
            "passed": self.passed,
            "images": [{**asdict(r), "passed": r.passed} for r in self.images],
        }

    def table(self) -> str:
        """A human-readable table, one row per image, then the verdict."""
        head = f"{'image':<24} {'ref':>4} {'cand':>4} {'match':>5} {'box px':>8} {'score':>7} {'mIoU min':>8} {'mIoU':>7}  result"
        rows = [head, "-" * len(head)]

        def f(v: Optional[float], fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        for r in self.images:
            verdict = "ok" if r.passed else "FAIL: " + "; ".join(r.failures)
            if r.passed and r.borderline:
                verdict += f" ({r.borderline} borderline)"
            rows.append(
                f"{Path(r.image).name[:24]:<24} {r.reference:>4} {r.candidate:>4} {r.matched:>5} "
                f"{f(r.max_box_error, '.3f'):>8} {f(r.max_score_error, '.4f'):>7} {f(r.min_mask_iou, '.4f'):>8} "
                f"{f(r.mask_iou, '.4f'):>7}  {verdict}"
            )
        if not all(r.same_input for r in self.images):
            rows.append("note: the two models could not take the same input tensor (different fixed sizes, layouts or "
                        "quantized input); each used its own letterbox, so the errors include that difference")
        t = self.thresholds
        rows.append(
            f"{'PASS' if self.passed else 'FAIL'}: {sum(r.passed for r in self.images)}/{len(self.images)} images within "
            f"{self.precision} limits (box <= {t.box_px} px{f' or {t.box_rel:.0%} of the box' if t.box_rel else ''}, "
            f"score <= {t.score}, mask IoU >= {t.mask_iou})"
        )
        return "\n".join(rows)


def list_images(sources: Iterable[Union[str, Path]]) -> List[Path]:
    """Image files from files and folders (a folder contributes its image files, sorted)."""
    out: List[Path] = []
    for s in sources:
        out.extend(list_files(s, IMAGE_SUFFIXES, what="images", error=InputError))
    if not out:
        raise InputError("no images given to verify on (pass image files or a folder)")
    return out


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes (N,4) x (M,4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(ref: Results, cand: Results, min_iou: float = MATCH_IOU) -> List[Tuple[int, int]]:
    """Greedy matching: reference detections by descending score, each to the unmatched candidate
    of the same class with the highest box IoU (at least ``min_iou``). Returns (ref, cand) pairs."""
    if not len(ref) or not len(cand):
        return []
    ious = _box_iou(ref.boxes, cand.boxes)
    ious[ref.class_ids[:, None] != cand.class_ids[None, :]] = -1.0
    pairs, used = [], set()
    for i in np.argsort(-ref.scores, kind="stable"):
        row = ious[i].copy()
        row[list(used)] = -1.0
        j = int(np.argmax(row))
        if row[j] >= min_iou:
            pairs.append((int(i), j))
            used.add(j)
    return pairs


def _pair_iou(a: Masks, i: int, b: Masks, j: int) -> Tuple[int, int]:
    """(intersection, union) pixel counts of mask ``i`` of ``a`` and mask ``j`` of ``b``."""
    ca, (ax, ay) = a.crops[i], a.offsets[i]
    cb, (bx, by) = b.crops[j], b.offsets[j]
    x0, y0 = min(ax, bx), min(ay, by)
    x1 = max(ax + ca.shape[1], bx + cb.shape[1])
    y1 = max(ay + ca.shape[0], by + cb.shape[0])
    fa = np.zeros((y1 - y0, x1 - x0), bool)
    fb = np.zeros_like(fa)
    fa[ay - y0: ay - y0 + ca.shape[0], ax - x0: ax - x0 + ca.shape[1]] = ca
    fb[by - y0: by - y0 + cb.shape[0], bx - x0: bx - x0 + cb.shape[1]] = cb
    return int((fa & fb).sum()), int((fa | fb).sum())


def compare(ref: Results, cand: Results, th: Thresholds, conf: float, image: str = "", same_input: bool = True) -> ImageReport:
    """Compare two results of the same image against thresholds ``th``."""
    pairs = match_detections(ref, cand)
    rep = ImageReport(image=image, reference=len(ref), candidate=len(cand), matched=len(pairs), same_input=same_input)
    mi = {i for i, _ in pairs}
    mj = {j for _, j in pairs}

    def det(r: Results, k: int) -> Dict[str, Any]:
        return {"class_id": int(r.class_ids[k]), "class": r.names.get(int(r.class_ids[k]), str(r.class_ids[k])),
                "score": round(float(r.scores[k]), 4), "xyxy": [round(float(v), 1) for v in r.boxes[k]]}

    for r, used, out in ((ref, mi, rep.unmatched_reference), (cand, mj, rep.unmatched_candidate)):
        for k in range(len(r)):
            if k in used:
                continue
            if r.scores[k] < conf + th.margin:
                rep.borderline += 1
            else:
                out.append(det(r, k))
    if pairs:
        ii = np.array([p[0] for p in pairs])
        jj = np.array([p[1] for p in pairs])
        errs = np.abs(ref.boxes[ii] - cand.boxes[jj]).max(1)
        sides = (ref.boxes[ii, 2:] - ref.boxes[ii, :2]).max(1)
        limits = np.maximum(th.box_px, th.box_rel * sides)
        rep.max_box_error = float(errs.max())
        worst = int(np.argmax(errs - limits))
        box_failed = bool(errs[worst] > limits[worst])
        rep.max_score_error = float(np.abs(ref.scores[ii] - cand.scores[jj]).max())
        if ref.masks is not None and cand.masks is not None:
            counts = [_pair_iou(ref.masks, i, cand.masks, j) for i, j in pairs]
            ious = [inter / u if u else 1.0 for inter, u in counts]
            rep.min_mask_iou = float(min(ious))
            total_u = sum(u for _, u in counts)
            rep.mask_iou = float(sum(i for i, _ in counts) / total_u) if total_u else 1.0
    if rep.unmatched_reference:
        rep.failures.append(f"{len(rep.unmatched_reference)} reference detection(s) missing")
    if rep.unmatched_candidate:
        rep.failures.append(f"{len(rep.unmatched_candidate)} extra candidate detection(s)")
    if pairs and box_failed:
        rep.failures.append(f"box error {errs[worst]:.2f} px > {limits[worst]:.2f}")
    if rep.max_score_error is not None and rep.max_score_error > th.score:
        rep.failures.append(f"score error {rep.max_score_error:.4f} > {th.score}")
    if rep.min_mask_iou is not None and rep.min_mask_iou < th.mask_iou:
        rep.failures.append(f"mask IoU {rep.min_mask_iou:.4f} < {th.mask_iou}")
    return rep


def _precision(meta_quant: Optional[str]) -> str:
    q = (meta_quant or "").lower()
    if "int8" in q or "uint8" in q:
        return "int8"
    if "16" in q:
        return "fp16"
    return "fp32"


def verify(
    reference: Union[str, Path],
    candidate: Union[str, Path],
    images: Sequence[Union[str, Path]],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    imgsz: Optional[Union[int, Tuple[int, int]]] = None,
    precision: Optional[str] = None,
    thresholds: Optional[Thresholds] = None,
    reference_backend: str = "auto",
    candidate_backend: str = "auto",
    progress: bool = False,
) -> VerifyReport:
    """Run ``reference`` and ``candidate`` on ``images`` (files or folders) and compare.

    ``precision`` (``fp32``/``fp16``/``int8``) picks the thresholds; default from the candidate's
    ``quantization`` metadata. ``imgsz`` applies to dynamic-shape models (default: the model's).
    """
    from ..preprocess import is_nhwc
    from ..runtime import Runtime

    if precision is not None and precision not in THRESHOLDS:
        raise InputError(f"precision must be one of {', '.join(THRESHOLDS)}, got {precision!r}")
    files = list_images(images)
    with _open(Runtime, reference, imgsz, conf=conf, iou=iou, backend=reference_backend) as ref_rt, \
            _open(Runtime, candidate, imgsz, conf=conf, iou=iou, backend=candidate_backend) as cand_rt:
        prec = precision or _precision(cand_rt.meta.quantization)
        th = thresholds or THRESHOLDS[prec]
        driver, other = _driver(ref_rt, cand_rt)
        shareable = _accepts(other, driver, is_nhwc)
        reports = []
        it: Iterable[Path] = files
        if progress:
            from tqdm import tqdm

            it = tqdm(files, desc="verify", unit="image", leave=False)
        for f in it:
            img = read_image(f)
            feeds, lb = driver.preprocess(img)
            out_d = driver.infer(feeds)
            res_d = driver.postprocess(out_d, lb, img, str(f))
            if shareable:
                tensor = _relayout(next(iter(feeds.values())), driver.input_spec.shape, other.input_spec.shape,
                                   is_nhwc).astype(other.input_spec.dtype, copy=False)
                out_o = other.infer({other.input_spec.name: tensor})
                res_o = other.postprocess(out_o, lb, img, str(f))
            else:
                res_o = other.predict_one(img)
            ref_res, cand_res = (res_d, res_o) if driver is ref_rt else (res_o, res_d)
            reports.append(compare(ref_res, cand_res, th, conf, str(f), same_input=shareable))
    return VerifyReport(str(reference), str(candidate), prec, th, conf, iou, reports)


def _open(runtime_cls: Any, model: Union[str, Path], imgsz: Any, **kwargs: Any) -> Any:
    """A Runtime; ``imgsz`` applies to dynamic-shape models, fixed-shape ones keep their size."""
    if imgsz is None:
        return runtime_cls(model, **kwargs)
    rt = runtime_cls(model, **kwargs)
    if _fixed(rt):
        return rt
    rt.close()
    return runtime_cls(model, imgsz=imgsz, **kwargs)


def _fixed(rt: Any) -> bool:
    shape = rt.input_spec.shape
    return all(d is not None for d in shape[1:])


def _driver(ref_rt: Any, cand_rt: Any) -> Tuple[Any, Any]:
    """The runtime whose preprocessing both use: the fixed-shape one (candidate first)."""
    if _fixed(cand_rt) and not _fixed(ref_rt):
        return cand_rt, ref_rt
    return ref_rt, cand_rt


def _accepts(other: Any, driver: Any, is_nhwc: Any) -> bool:
    """Whether ``other`` can take ``driver``'s input tensor as is (same layout, float, fitting shape)."""
    a, b = other.input_spec, driver.input_spec
    if not (np.issubdtype(np.dtype(a.dtype), np.floating) and np.issubdtype(np.dtype(b.dtype), np.floating)):
        return False
    if _fixed(other):
        return tuple(_relayout_shape(b.shape, a.shape, is_nhwc)[1:]) == tuple(a.shape[1:]) and _fixed(driver)
    return True


def _relayout_shape(src: Any, dst: Any, is_nhwc: Any) -> Tuple[Any, ...]:
    """``src`` (an image input shape) in ``dst``'s layout (NCHW <-> NHWC)."""
    src = tuple(src)
    if is_nhwc(src) == is_nhwc(dst):
        return src
    return (src[0], src[3], src[1], src[2]) if is_nhwc(src) else (src[0], src[2], src[3], src[1])


def _relayout(x: np.ndarray, src: Any, dst: Any, is_nhwc: Any) -> np.ndarray:
    """The driver's input tensor in the other model's layout (NHWC TFLite vs NCHW torch/ONNX)."""
    if is_nhwc(tuple(src)) == is_nhwc(tuple(dst)):
        return x
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if is_nhwc(tuple(src)) else x.transpose(0, 2, 3, 1))
