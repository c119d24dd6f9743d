"""Synthetic instance-segmentation data: overlapping shapes on textured backgrounds (numpy + OpenCV).

    >>> from edgeseg.eval.datasets.synth import synth_dataset
    >>> report = synth_dataset("synth/", images=200, imgsz=320, seed=0)      # -> synth/synth.yaml
    >>> report = synth_dataset("clip/", images=20, video=10, fps=15)          # + clip/video.mp4, video.jsonl

Every image holds a few shapes of the classes in :data:`CLASSES` (circle, rectangle, triangle, star,
ellipse, hexagon) with random scale, rotation, aspect and colour, drawn in depth order so that
later shapes occlude earlier ones. Labels are the YOLO segmentation format: per instance one
polygon of its *visible* pixels (after occlusion), traced at 4x resolution, with holes and
separate parts joined by zero-area bridges (:func:`~edgeseg.eval.datasets.coco.merge_polygons`),
so the COCO rasterization of a label equals the rendered pixels of that instance. Instances
occluded to less than :data:`MIN_VISIBLE` of their area are removed before rendering, so every
shape pixel in an image belongs to a labelled instance.

Output layout::

    OUT/synth.yaml                  # path: ., train: images/train, val: images/val, names: {...}
    OUT/images/{train,val}/000000.jpg
    OUT/labels/{train,val}/000000.txt
    OUT/video.mp4, OUT/video.jsonl  # with video: one JSON line per frame (see synth_video)

Everything is deterministic for a seed: image ``i`` depends only on ``(seed, i)`` and the sizes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import DatasetError, InputError

__all__ = ["CLASSES", "synth_dataset", "synth_image", "synth_video", "Shape", "visible_polygon"]

#: class names, in class-id order (``classes=N`` keeps the first N)
CLASSES: Tuple[str, ...] = ("circle", "rectangle", "triangle", "star", "ellipse", "hexagon")
#: an instance showing less than this fraction of its own area is left out of the image
MIN_VISIBLE = 0.3
#: and one with fewer visible pixels than this
MIN_PIXELS = 24
#: polygons are traced on the mask upsampled by this factor (sub-pixel outlines)
TRACE_SCALE = 4
_SEED_TAG_IMAGE, _SEED_TAG_VIDEO = 1, 2


# --------------------------------------------------------------------------- shapes


def _ring(n: int, rx: float, ry: float) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], 1)


def _outline(cls: str, size: float, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (K, 2) of a shape of class ``cls`` centred at 0 with radius ``size`` (before rotation)."""
    if cls == "circle":
        return _ring(72, size, size)
    if cls == "ellipse":
        return _ring(72, size, size * (0.38 + 0.27 * aspect))
    if cls == "rectangle":
        w, h = size, size * (0.45 + 0.55 * aspect)
        return np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64) / math.sqrt(2) * 1.2
    if cls == "triangle":
        ang = np.radians([90, 210, 330]) + rng.uniform(-0.25, 0.25, 3)
        r = size * rng.uniform(0.9, 1.1, 3)
        return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
    if cls == "star":
        t = np.linspace(0.0, 2 * math.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, size, size * 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if cls == "hexagon":
        return _ring(6, size, size)
    raise InputError(f"unknown shape class {cls!r}; expected one of {', '.join(CLASSES)}")


@dataclass
class Shape:
    """One object: class id, outline vertices ``(K, 2)`` float64 in pixel-edge coordinates
    (pixel ``i`` spans ``[i, i+1)``), fill colour (BGR), shading direction and texture kind."""

    class_id: int
    vertices: np.ndarray
    color: Tuple[int, int, int]
    shade: Tuple[float, float]
    texture: int
    track_id: int = 0


def _random_shape(rng: np.random.Generator, cls_id: int, cls: str, cx: float, cy: float, size: float) -> Shape:
    angle = rng.uniform(0, 2 * math.pi)
    base = _outline(cls, size, float(rng.uniform()), rng)
    c, s = math.cos(angle), math.sin(angle)
    verts = base @ np.array([[c, s], [-s, c]]) + (cx, cy)
    color = tuple(int(v) for v in rng.integers(20, 236, 3))
    shade = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    return Shape(cls_id, verts, color, shade, int(rng.integers(0, 3)))  # type: ignore[arg-type]


def _fill(mask: np.ndarray, verts: np.ndarray, value: int = 1) -> None:
    """Rasterize a polygon in pixel-edge coordinates (sub-pixel exact, no anti-aliasing)."""
    import cv2

    pts = np.round((verts - 0.5) * 16).astype(np.int32)  # to pixel-centre coordinates, 4 fractional bits
    cv2.fillPoly(mask, [pts], value, lineType=cv2.LINE_8, shift=4)


# --------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured BGR background: low-frequency colour noise, a gradient, lines and fine grain."""
    import cv2

    small = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-60, 60, 2)
    img += (gx * xx / w + gy * yy / h)[..., None]
    img = np.clip(img * rng.uniform(0.4, 1.0), 0, 255)
    canvas = img.astype(np.uint8)
    for _ in range(int(rng.integers(0, 8))):  # distractor strokes (not objects)
        p0 = tuple(int(v) for v in rng.integers(0, max(h, w), 2))
        p1 = tuple(int(v) for v in rng.integers(0, max(h, w), 2))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(canvas, p0, p1, col, int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
    if rng.uniform() < 0.5:  # a faint checker or stripe pattern
        period = int(rng.integers(6, 24))
        pattern = ((xx // period + (yy // period) * rng.integers(0, 2)) % 2).astype(np.float32)
        canvas = np.clip(canvas + (pattern * rng.uniform(-30, 30))[..., None], 0, 255).astype(np.uint8)
    grain = rng.normal(0, rng.uniform(2, 10), (h, w, 1)).astype(np.float32)
    return np.clip(canvas + grain, 0, 255).astype(np.uint8)


def _paint(canvas: np.ndarray, shape: Shape, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint ``shape`` where ``mask`` is set: its colour with a shading gradient and a texture."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    x0, y0 = shape.vertices.min(axis=0)
    x1, y1 = shape.vertices.max(axis=0)
    u = (xs - (x0 + x1) / 2) / max(x1 - x0, 1.0)
    v = (ys - (y0 + y1) / 2) / max(y1 - y0, 1.0)
    tone = 70.0 * (shape.shade[0] * u + shape.shade[1] * v)
    if shape.texture == 1:  # stripes
        tone += 18.0 * np.sign(np.sin((xs + ys) * 0.6))
    elif shape.texture == 2:  # speckle
        tone += rng.normal(0, 12.0, len(xs))
    color = np.asarray(shape.color, np.float32)[None, :] + tone[:, None]
    canvas[ys, xs] = np.clip(color, 0, 255).astype(np.uint8)


def _id_map(shapes: Sequence[Shape], h: int, w: int) -> np.ndarray:
    """(h, w) int32: 1 + index of the top-most shape at each pixel, 0 for background."""
    ids = np.zeros((h, w), np.int32)
    for i, s in enumerate(shapes):
        _fill(ids, s.vertices, i + 1)
    return ids


def _full_area(shape: Shape, h: int, w: int) -> int:
    m = np.zeros((h, w), np.uint8)
    _fill(m, shape.vertices)
    return int(m.sum())


def _drop_hidden(shapes: List[Shape], h: int, w: int) -> Tuple[List[Shape], np.ndarray]:
    """Remove (top-most first) shapes that show too little; returns the kept shapes and their id map."""
    while True:
        ids = _id_map(shapes, h, w)
        counts = np.bincount(ids.ravel(), minlength=len(shapes) + 1)[1:]
        bad = [i for i, s in enumerate(shapes)
               if counts[i] < MIN_PIXELS or counts[i] < MIN_VISIBLE * max(_full_area(s, h, w), 1)]
        if not bad:
            return shapes, ids
        shapes = [s for i, s in enumerate(shapes) if i != bad[0]]


def visible_polygon(mask: np.ndarray) -> np.ndarray:
    """One polygon ``(K, 2)`` float64 in pixel-edge coordinates whose COCO rasterization is ``mask``
    (bool (h, w)): outer contours and holes traced at :data:`TRACE_SCALE`, joined by bridges."""
    import cv2

    from .coco import merge_polygons

    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.zeros((0, 2))
    y0, x0 = ys.min(), xs.min()
    crop = mask[y0: ys.max() + 1, x0: xs.max() + 1].astype(np.uint8)
    up = np.pad(np.kron(crop, np.ones((TRACE_SCALE, TRACE_SCALE), np.uint8)), 1)
    contours, _ = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c.reshape(-1, 2).astype(np.float64) - 1 + 0.5) / TRACE_SCALE + (x0, y0) for c in contours]
    return merge_polygons([p if len(p) >= 3 else np.repeat(p, 3, axis=0)[:3] for p in polys])


def _objects(shapes: Sequence[Shape], ids: np.ndarray) -> List[Dict[str, Any]]:
    out = []
    for i, s in enumerate(shapes):
        m = ids == i + 1
        ys, xs = np.nonzero(m)
        poly = visible_polygon(m)
        out.append({"class_id": s.class_id, "track_id": s.track_id, "polygon": poly,
                    "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                    "pixels": int(len(ys))})
    return out


def synth_image(index: int, imgsz: Union[int, Tuple[int, int]] = 320, seed: int = 0,
                classes: Sequence[str] = CLASSES, max_objects: int = 7, return_ids: bool = False) -> Any:
    """Render image ``index`` of the stream for ``seed``.

    Returns ``(image (h, w, 3) uint8 BGR, objects)``; each object: ``class_id``, ``polygon``
    ``(K, 2)`` float64 pixel-edge coordinates of its visible part, ``box`` ``[x1, y1, x2, y2]``
    (visible pixels), ``pixels`` (visible pixel count). With ``return_ids`` also the (h, w)
    int32 map of which object (1 + its index, 0: background) each pixel shows."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    rng = np.random.default_rng([seed, _SEED_TAG_IMAGE, index])
    canvas = _background(rng, h, w)
    shapes: List[Shape] = []
    side = min(h, w)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cid = int(rng.integers(0, len(classes)))
        size = side * float(np.exp(rng.uniform(math.log(0.05), math.log(0.3))))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        shapes.append(_random_shape(rng, cid, classes[cid], cx, cy, size))
    shapes, ids = _drop_hidden(shapes, h, w)
    for i, s in enumerate(shapes):
        _paint(canvas, s, ids == i + 1, rng)
    return (canvas, _objects(shapes, ids), ids) if return_ids else (canvas, _objects(shapes, ids))


def _label_lines(objects: Sequence[Dict[str, Any]], h: int, w: int) -> List[str]:
    lines = []
    for o in objects:
        norm = np.clip(o["polygon"] / np.array([w, h], np.float64), 0.0, 1.0)
        lines.append(" ".join([str(o["class_id"])] + [f"{v:.6f}" for v in norm.ravel()]))
    return lines


def _check_args(images: int, imgsz: int, classes: Sequence[str], val_fraction: float) -> None:
    if not isinstance(images, int) or images < 2:
        raise InputError(f"images must be an integer >= 2 (one train and one val image), got {images!r}")
    if not isinstance(imgsz, int) or not 32 <= imgsz <= 4096:
        raise InputError(f"imgsz must be an integer from 32 to 4096, got {imgsz!r}")
    unknown = [c for c in classes if c not in CLASSES]
    if not classes or unknown:
        raise InputError(f"classes must be names from {', '.join(CLASSES)}, got {list(classes)!r}")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")


def resolve_classes(spec: Union[None, int, str, Sequence[str]]) -> Tuple[str, ...]:
    """``None`` -> all; ``3`` or ``"3"`` -> the first 3; ``"circle,star"`` or a list -> those names."""
    if spec is None:
        return CLASSES
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if not 1 <= n <= len(CLASSES):
            raise InputError(f"classes: expected 1 to {len(CLASSES)}, got {n}")
        return CLASSES[:n]
    names = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [c for c in names if c]
    _check_args(2, 32, names, 0.5)
    return tuple(names)


def synth_dataset(out: Union[str, Path], images: int = 200, imgsz: int = 320, seed: int = 0,
                  classes: Union[None, int, str, Sequence[str]] = None, val_fraction: float = 0.2,
                  video: float = 0.0, fps: int = 15, overwrite: bool = False,
                  progress: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Write a synthetic YOLO segmentation dataset (and optionally a clip) under ``out``.

    ``images`` are split into train and val (the last ``val_fraction``, at least one). The
    folder appears atomically; an existing non-empty ``out`` needs ``overwrite``. ``progress``
    is called with the number of items done after each one. Returns a report dict: ``yaml``,
    ``train``, ``val``, ``instances``, ``names`` and, with ``video``, ``video``/``video_gt``/``frames``.
    """
    import cv2
    import yaml

    from ...io import atomic_dir

    names = resolve_classes(classes)
    _check_args(images, imgsz, names, val_fraction)
    if video < 0 or fps < 1:
        raise InputError(f"video seconds must be >= 0 and fps >= 1, got {video!r} s at {fps!r} fps")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"output folder {out} exists and is not empty; choose a new folder or pass --overwrite")
    n_val = max(1, int(round(images * val_fraction)))
    report: Dict[str, Any] = {"train": images - n_val, "val": n_val, "instances": 0, "names": dict(enumerate(names))}
    with atomic_dir(out) as tmp:
        for i in range(images):
            split = "train" if i < images - n_val else "val"
            img, objects = synth_image(i, imgsz, seed, names)
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise DatasetError(f"OpenCV could not encode synthetic image {i} as JPEG")
            (tmp / "images" / split / f"{i:06d}.jpg").write_bytes(buf.tobytes())
            lines = _label_lines(objects, imgsz, imgsz)
            (tmp / "labels" / split / f"{i:06d}.txt").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
            report["instances"] += len(lines)
            if progress:
                progress(1)
        cfg = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
        (tmp / "synth.yaml").write_text(
            f"# synthetic shapes: `edgeseg data synth --images {images} --imgsz {imgsz} --seed {seed}`\n"
            + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        if video > 0:
            frames = synth_video(tmp / "video.mp4", tmp / "video.jsonl", seconds=video, fps=fps, imgsz=imgsz,
                                 seed=seed, classes=names, progress=progress)
            report.update(video=str(out / "video.mp4"), video_gt=str(out / "video.jsonl"), frames=frames)
    report["yaml"] = str(out / "synth.yaml")
    return report


# --------------------------------------------------------------------------- video


@dataclass
class _Mover:
    cls: int
    size: float
    aspect: float
    angle: float
    spin: float
    pos: np.ndarray
    vel: np.ndarray
    base: np.ndarray
    color: Tuple[int, int, int]
    shade: Tuple[float, float]
    texture: int
    track_id: int

    def shape(self) -> Shape:
        c, s = math.cos(self.angle), math.sin(self.angle)
        verts = self.base @ np.array([[c, s], [-s, c]]) + self.pos
        return Shape(self.cls, verts, self.color, self.shade, self.texture, self.track_id)


def synth_video(path: Union[str, Path], gt_path: Union[str, Path], seconds: float = 10.0, fps: int = 15,
                imgsz: int = 320, seed: int = 0, classes: Sequence[str] = CLASSES, objects: int = 6,
                progress: Optional[Callable[[int], None]] = None) -> int:
    """Write a clip of moving shapes (``path``, mp4) and its ground truth (``gt_path``, JSON lines).

    Objects keep their track id, class, colour and depth order for the whole clip; they move at
    constant speed, spin, bounce off the borders and pass in front of / behind each other, so
    they are briefly occluded. One JSON line per frame::

        {"frame": 0, "time": 0.0, "width": W, "height": H,
         "objects": [{"track_id": 1, "class_id": 0, "class": "circle", "box": [x1, y1, x2, y2],
                      "polygon": [[x, y], ...], "visible": 0.93}, ...]}

    Coordinates are pixels (pixel-edge frame); ``visible`` is the visible fraction of the
    object's area; an object with no visible pixel is left out of that frame. Returns the frame count.
    """
    import cv2

    h, w = int(imgsz), int(round(imgsz * 4 / 3 / 16)) * 16  # a 4:3 frame
    rng = np.random.default_rng([seed, _SEED_TAG_VIDEO])
    bg = _background(rng, h, w)
    movers: List[_Mover] = []
    for k in range(objects):
        cid = int(rng.integers(0, len(classes)))
        size = min(h, w) * float(rng.uniform(0.08, 0.16))
        speed = min(h, w) * float(rng.uniform(0.15, 0.45))  # pixels per second
        heading = rng.uniform(0, 2 * math.pi)
        movers.append(_Mover(
            cid, size, float(rng.uniform()), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(-1.5, 1.5)),
            np.array([rng.uniform(size, w - size), rng.uniform(size, h - size)]),
            speed * np.array([math.cos(heading), math.sin(heading)]), _outline(classes[cid], size, float(rng.uniform()), rng),
            tuple(int(v) for v in rng.integers(20, 236, 3)), (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
            int(rng.integers(0, 3)), k + 1))  # type: ignore[arg-type]
    n_frames = max(1, int(round(seconds * fps)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise DatasetError(f"OpenCV cannot write an mp4 video to {path} (no mp4v encoder in this OpenCV build)")
    try:
        with open(gt_path, "w", encoding="utf-8") as gt:
            for f in range(n_frames):
                shapes = [m.shape() for m in movers]
                ids = _id_map(shapes, h, w)
                frame = bg.copy()
                frng = np.random.default_rng([seed, _SEED_TAG_VIDEO, f])
                for i, s in enumerate(shapes):
                    _paint(frame, s, ids == i + 1, frng)
                rows = []
                for i, s in enumerate(shapes):
                    m = ids == i + 1
                    n = int(m.sum())
                    if n == 0:
                        continue
                    ys, xs = np.nonzero(m)
                    poly = visible_polygon(m)
                    rows.append({"track_id": s.track_id, "class_id": s.class_id, "class": classes[s.class_id],
                                 "box": [int(xs.min()), int(ys.min()), int(xs.max() + 1), int(ys.max() + 1)],
                                 "polygon": [[round(float(x), 3), round(float(y), 3)] for x, y in poly],
                                 "visible": round(n / max(_full_area(s, h, w), 1), 4)})
                gt.write(json.dumps({"frame": f, "time": round(f / fps, 4), "width": w, "height": h,
                                     "objects": rows}) + "\n")
                writer.write(frame)
                for m_ in movers:  # constant velocity, bouncing off the borders
                    m_.pos = m_.pos + m_.vel / fps
                    m_.angle += m_.spin / fps
                    for axis, lim in ((0, w), (1, h)):
                        if m_.pos[axis] < m_.size * 0.5 or m_.pos[axis] > lim - m_.size * 0.5:
                            m_.vel[axis] = -m_.vel[axis]
                            m_.pos[axis] = float(np.clip(m_.pos[axis], m_.size * 0.5, lim - m_.size * 0.5))
                if progress:
                    progress(1)
    finally:
        writer.release()
    return n_frames
