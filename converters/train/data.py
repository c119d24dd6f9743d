"""Training data: the YOLO reader of :mod:`edgeseg.eval.datasets`, augmentation and batching.

One sample is ``(image (3, S, S) uint8 RGB, cls (n,), boxes (n, 4) cx cy w h normalized 0-1,
mask (S, S) int16)``: ``mask`` holds ``j + 1`` where the ``j``-th instance of the image is
the top-most one (instances are drawn largest first, so overlapping objects each keep pixels).
It is drawn at the image's resolution, not the prototypes' (S/4): the loss averages it down to
the fraction of each prototype cell an object covers, so the masks learn where an edge lies
inside a cell instead of a 4-pixel staircase.

Augmentation (train split): mosaic of 4 images, random affine (scale, translation, rotation,
shear), HSV jitter, left-right flip; otherwise a plain letterbox. Randomness never comes from a
global generator: sample ``i`` of epoch ``e`` draws from ``numpy.random.default_rng((seed, e, i))``,
so a run is the same with any number of workers or processes, and a resumed run sees the same
batches. Labels are kept as a few flat numpy arrays (not per-object Python lists), so forked
workers do not copy them page by page as reference counts change (the usual cause of RAM
growth in long runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgeseg.eval.datasets import load_dataset
from edgeseg.errors import DatasetError
from edgeseg.io import read_image

__all__ = ["Augment", "SegDataset", "EpochSampler", "collate", "build_loader"]


@dataclass
class Augment:
    """Augmentation strengths (Ultralytics' defaults)."""

    hsv_h: float = 0.015  # hue gain (fraction)
    hsv_s: float = 0.7  # saturation gain
    hsv_v: float = 0.4  # value gain
    degrees: float = 0.0  # rotation (+/- deg)
    translate: float = 0.1  # translation (+/- fraction)
    scale: float = 0.5  # scale gain (+/-)
    shear: float = 0.0  # shear (+/- deg)
    fliplr: float = 0.5  # probability of a left-right flip
    mosaic: float = 1.0  # probability of a mosaic


class SegDataset(Dataset):
    """A YOLO segmentation split as training samples (see the module docstring).

    Indexed with ``(i, epoch, mosaic)`` tuples from :class:`EpochSampler` (a plain int means
    epoch 0 with augmentation as configured)."""

    def __init__(self, data: Any, split: str, imgsz: int, augment: bool, hyp: Optional[Augment] = None,
                 seed: int = 0) -> None:
        ds = load_dataset(data, split=split)
        if len(ds) == 0:
            raise DatasetError(f"{data}: split '{split}' has no images")
        if imgsz % 32:
            raise DatasetError(f"imgsz must be a multiple of 32, got {imgsz}")
        self.names: Dict[int, str] = dict(ds.names)
        self.issues = list(ds.issues)
        self.imgsz, self.augment, self.seed = int(imgsz), bool(augment), int(seed)
        self.hyp = hyp or Augment()
        # flat label arrays: image -> instances [inst_start[i], inst_start[i+1]),
        # instance -> points [pt_start[k], pt_start[k+1]) of its polygon(s), normalized 0-1
        self.files = np.array([str(it.path) for it in ds.items])
        cls, pts, inst_start, pt_start = [], [], [0], [0]
        for it in ds.items:
            for k in range(len(it)):
                poly = np.concatenate(it.segments[k]) if it.segments[k] else np.zeros((0, 2))
                cls.append(int(it.class_ids[k]))
                pts.append(poly.astype(np.float32))
                pt_start.append(pt_start[-1] + len(poly))
            inst_start.append(len(cls))
        self.cls = np.array(cls, np.int64)
        self.points = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
        self.inst_start = np.array(inst_start, np.int64)
        self.pt_start = np.array(pt_start, np.int64)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_instances(self) -> int:
        return len(self.cls)

    # -- one image, resized so that its long side is imgsz
    def _load(self, i: int) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        img = read_image(self.files[i])
        h0, w0 = img.shape[:2]
        r = self.imgsz / max(h0, w0)
        if r != 1:
            img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))),
                             interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA)
        h, w = img.shape[:2]
        a, b = self.inst_start[i], self.inst_start[i + 1]
        segs = [self.points[self.pt_start[k]: self.pt_start[k + 1]].astype(np.float64) * (w, h) for k in range(a, b)]
        return img, self.cls[a:b].copy(), segs

    def _mosaic(self, i: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        """Four images around a random centre on a (2S, 2S) canvas."""
        s = self.imgsz
        xc, yc = (int(rng.uniform(s * 0.5, s * 1.5)) for _ in range(2))
        picks = [i] + [int(v) for v in rng.integers(0, len(self), 3)]
        canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
        all_cls, all_segs = [], []
        for k, j in enumerate(picks):
            img, cls, segs = self._load(j)
            h, w = img.shape[:2]
            if k == 0:  # top left
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif k == 1:  # top right
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif k == 2:  # bottom left
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:  # bottom right
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            all_cls.append(cls)
            all_segs += [p + (x1a - x1b, y1a - y1b) for p in segs]
        return canvas, np.concatenate(all_cls), all_segs

    def _letterbox(self, img: np.ndarray, segs: List[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
        """Pad a resized image (long side S) to (S, S), centred, with grey 114."""
        s = self.imgsz
        h, w = img.shape[:2]
        top, left = (s - h) // 2, (s - w) // 2
        out = cv2.copyMakeBorder(img, top, s - h - top, left, s - w - left, cv2.BORDER_CONSTANT, value=(114, 114, 114))
        return out, [p + (left, top) for p in segs]

    def __getitem__(self, index: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        i, epoch, mosaic = index if isinstance(index, tuple) else (int(index), 0, True)
        rng = np.random.default_rng([self.seed, epoch, i])
        hyp, s = self.hyp, self.imgsz
        if self.augment and mosaic and rng.uniform() < hyp.mosaic:
            img, cls, segs = self._mosaic(i, rng)
            img, cls, segs = _random_affine(img, cls, segs, rng, hyp, out_size=s)  # the mosaic's centre S x S, warped
        else:
            img, cls, segs = self._load(i)
            img, segs = self._letterbox(img, segs)
            if self.augment:
                img, cls, segs = _random_affine(img, cls, segs, rng, hyp, out_size=s)
        if self.augment:
            _hsv(img, rng, hyp)
            if rng.uniform() < hyp.fliplr:
                img = np.ascontiguousarray(img[:, ::-1])
                segs = [np.stack([s - p[:, 0], p[:, 1]], 1) for p in segs]
        boxes = _boxes(segs, s)
        mask = _overlap_mask(segs, boxes, s)
        xywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) / s if len(boxes) else np.zeros((0, 4))
        chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return chw, cls.astype(np.int64), xywh.astype(np.float32), mask


def _random_affine(img: np.ndarray, cls: np.ndarray, segs: List[np.ndarray], rng: np.random.Generator, hyp: Augment,
                   out_size: int) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    """Rotate, scale, shear and translate ``img`` (its centre to the output centre), warping the
    polygons with it; instances that (nearly) leave the image or shrink to slivers are dropped."""
    h, w = img.shape[:2]
    c = np.eye(3)
    c[0, 2], c[1, 2] = -w / 2, -h / 2
    r = np.eye(3)
    a = rng.uniform(-hyp.degrees, hyp.degrees)
    sc = rng.uniform(1 - hyp.scale, 1 + hyp.scale)
    r[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=sc)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-hyp.shear, hyp.shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-hyp.shear, hyp.shear)))
    t = np.eye(3)
    t[0, 2] = rng.uniform(0.5 - hyp.translate, 0.5 + hyp.translate) * out_size
    t[1, 2] = rng.uniform(0.5 - hyp.translate, 0.5 + hyp.translate) * out_size
    m = t @ sh @ r @ c  # on pixel-edge coordinates (the polygons'); OpenCV warps pixel centres:
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    m_img = np.linalg.inv(half) @ m @ half
    out = cv2.warpAffine(img, m_img[:2], dsize=(out_size, out_size), borderValue=(114, 114, 114))
    warped = [p @ m[:2, :2].T + m[:2, 2] for p in segs]
    before = _boxes(segs, None) * sc
    after = _boxes(warped, out_size)
    keep = _box_candidates(before, after)
    return out, cls[keep], [p for p, k in zip(warped, keep) if k]


def _boxes(segs: Sequence[np.ndarray], clip: Optional[int]) -> np.ndarray:
    """(n, 4) xyxy bounds of polygons (points clipped to the image first when ``clip``)."""
    out = np.zeros((len(segs), 4), np.float64)
    for k, p in enumerate(segs):
        if clip is not None:
            inside = p[(p[:, 0] >= 0) & (p[:, 0] <= clip) & (p[:, 1] >= 0) & (p[:, 1] <= clip)]
            p = inside if len(inside) else np.zeros((1, 2))
        if len(p):
            out[k] = (*p.min(0), *p.max(0))
    return out


def _box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                    area_thr: float = 0.1) -> np.ndarray:
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def _hsv(img: np.ndarray, rng: np.random.Generator, hyp: Augment) -> None:
    """HSV colour jitter in place (lookup tables, as Ultralytics does)."""
    r = rng.uniform(-1, 1, 3) * [hyp.hsv_h, hyp.hsv_s, hyp.hsv_v] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=np.float64)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)


def _overlap_mask(segs: Sequence[np.ndarray], boxes: np.ndarray, s: int) -> np.ndarray:
    """(S, S) int16: ``j + 1`` where instance ``j`` is on top, instances drawn largest first.

    Polygons are in pixel-edge coordinates (pixel ``i`` spans ``[i, i+1)``), rasterized with
    sub-pixel precision."""
    out = np.zeros((s, s), np.int16)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    for j in np.argsort(-areas, kind="stable"):
        pts = np.round((segs[j] - 0.5) * 16).astype(np.int32)
        if len(pts) >= 3:
            cv2.fillPoly(out, [pts], int(j) + 1, lineType=cv2.LINE_8, shift=4)
    return out


def collate(batch: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Dict[str, torch.Tensor]:
    """Samples -> ``img`` (B, 3, S, S) uint8, ``batch_idx`` (N,), ``cls`` (N,), ``bboxes`` (N, 4)
    cx cy w h normalized, ``masks`` (B, S, S) int16 overlap maps (see the module docstring)."""
    imgs, cls, boxes, masks = zip(*batch)
    return {
        "img": torch.from_numpy(np.stack(imgs)),
        "batch_idx": torch.cat([torch.full((len(c),), i, dtype=torch.int64) for i, c in enumerate(cls)]),
        "cls": torch.from_numpy(np.concatenate(cls)),
        "bboxes": torch.from_numpy(np.concatenate(boxes)).float(),
        "masks": torch.from_numpy(np.stack(masks)),
    }


class EpochSampler(DistributedSampler):
    """torch's :class:`DistributedSampler` (shuffled per epoch from ``seed + epoch``, this rank's
    share) that yields ``(index, epoch, mosaic)`` and can start part-way into an epoch.

    With ``world`` processes each taking every ``world``-th index of the same permutation, one
    step of all processes together sees the same images as one step of a single process."""

    def __init__(self, dataset: Dataset, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0  # samples of this rank's share to skip (resume inside an epoch)
        self.mosaic = True

    def __iter__(self) -> Iterator[Tuple[int, int, bool]]:  # type: ignore[override]
        for k, i in enumerate(super().__iter__()):
            if k >= self.start:
                yield (int(i), self.epoch, self.mosaic)

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_loader(dataset: SegDataset, batch: int, workers: int, rank: int = 0, world: int = 1,
                 seed: int = 0) -> Tuple[DataLoader, EpochSampler]:
    """A DataLoader over this rank's share with ``batch`` images per step (``workers`` processes,
    persistent across epochs). Set ``sampler.epoch``/``start``/``mosaic`` before iterating."""
    sampler = EpochSampler(dataset, rank, world, seed=seed, shuffle=True)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, drop_last=False)
    return loader, sampler
