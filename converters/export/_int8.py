"""int8 shared by every format that quantizes (TFLite, Edge TPU, ONNX, OpenVINO): the option
check, the calibration images (letterboxed by the runtime's own preprocessing, exactly as at
inference), the ``int8`` metadata record and the float-vs-int8 accuracy report printed at the end
of a conversion and stored in the artifact's metadata (``int8_accuracy``).

Nothing heavy is imported at module level; OpenCV and the runtime are imported when used.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgeseg.errors import InputError

__all__ = [
    "DEFAULT_CALIB_IMAGES", "check_int8_options", "calibration_files", "letterboxed", "calibration_images",
    "int8_record", "val_report", "accuracy_report", "accuracy_table",
]

#: calibration images when --calib-images is not given (the whole split when it is smaller)
DEFAULT_CALIB_IMAGES = 300
INPUT_NAME = "images"


def check_int8_options(opts: Mapping[str, Any], title: str) -> None:
    """The int8 option rules of every format: int8 needs ``data``, excludes ``half``; ``data``,
    ``calib_images`` and ``val_data`` need int8; ``calib_images`` is positive. InputError otherwise."""
    int8 = bool(opts.get("int8"))
    if int8 and opts.get("half"):
        raise InputError("choose one of half (fp16) and int8, not both")
    if int8 and opts.get("data") is None:
        raise InputError(f"int8 {title} needs calibration images: pass data (--data DATASET.yaml or an image folder)")
    if not int8 and any(opts.get(k) is not None for k in ("data", "calib_images", "val_data")):
        extra = " (or --int8-io)" if "int8_io" in opts else ""
        raise InputError(f"data, calib_images and val_data apply to int8 exports; add --int8{extra}")
    n = opts.get("calib_images")
    if n is not None and n < 1:
        raise InputError(f"calib_images must be a positive integer, got {n}")


def calibration_files(data: Path, count: int, split: str = "train") -> List[Path]:
    """The first ``count`` images of ``data``: a YOLO dataset YAML (its ``split``) or an image folder."""
    data = Path(data)
    if not data.exists():
        raise InputError(f"calibration data not found: {data} (expected a dataset .yaml or an image folder)")
    if data.is_dir():
        from edgeseg.eval.verify import list_images

        files = list_images([data])
        if not files:
            raise InputError(f"calibration folder {data} holds no images")
    elif data.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"calibration data {data}: expected a YOLO dataset .yaml or an image folder, got a {data.suffix} file")
    else:
        from edgeseg.eval.datasets import load_dataset

        files = [Path(item.path) for item in load_dataset(data, split=split)]
        if not files:
            raise InputError(f"{data}: split {split!r} holds no images")
    return files[: max(int(count), 1)]


def letterboxed(files: Sequence[Path], hw: Tuple[int, int], stride: int = 32, nhwc: bool = True) -> Iterator[np.ndarray]:
    """Each image of ``files`` as the model input the runtime would feed: letterboxed to ``hw``,
    RGB 0-1 float32, ``(1, H, W, 3)`` (``nhwc``) or ``(1, 3, H, W)``. One at a time (a reader
    for calibrators that stream)."""
    import cv2

    from edgeseg.backend import TensorSpec
    from edgeseg.preprocess import Preprocessor

    shape = (1, hw[0], hw[1], 3) if nhwc else (1, 3, hw[0], hw[1])
    pre = Preprocessor(TensorSpec(INPUT_NAME, shape, np.dtype(np.float32), None, 0), hw, stride)
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"calibration image {f} cannot be read as an image")
        yield pre(img)[0]


def calibration_images(data: Path, count: int, hw: Tuple[int, int], stride: int = 32, split: str = "train",
                       nhwc: bool = True) -> Tuple[List[np.ndarray], List[Path]]:
    """Up to ``count`` images of ``data`` letterboxed as at inference (see :func:`letterboxed`), in memory."""
    files = calibration_files(Path(data), count, split)
    return list(letterboxed(files, hw, stride, nhwc)), files


def int8_record(opts: Mapping[str, Any], images: int, *, io: str = "float32", activations: Any = 8,
                weights: str = "int8 per-channel", float_parts: Sequence[str] = (), **extra: Any) -> Dict[str, Any]:
    """The ``int8`` metadata key: the recipe a model was quantized with (same keys in every format)."""
    rec: Dict[str, Any] = {"io": io, "activations": activations, "weights": weights, "float_parts": list(float_parts),
                           "calibration": {"data": str(opts["data"]), "images": int(images)}}
    rec.update(extra)
    return rec


def val_report(float_path: Path, int8_path: Path, opts: Mapping[str, Any], imgsz: Tuple[int, int],
               threads: int = 2) -> Optional[Dict[str, Any]]:
    """Float vs int8 ``val`` on ``val_data`` (else ``data``'s val split), printed as a table on
    stderr; None (with a note) when the data is an image folder without labels."""
    data = Path(opts.get("val_data") or opts["data"])
    if data.is_dir() or data.suffix.lower() not in (".yaml", ".yml"):
        print(f"edgeseg: no accuracy report: {data} is an image folder without labels; pass val_data "
              "(--val-data DATASET.yaml) to measure the int8 cost", file=sys.stderr)
        return None
    report = accuracy_report(float_path, int8_path, data, imgsz, threads=threads)
    print(accuracy_table(report), file=sys.stderr)
    return report


def accuracy_report(float_path: Path, int8_path: Path, data: Path, imgsz: Tuple[int, int],
                    threads: int = 2) -> Dict[str, Any]:
    """``val`` of the float and int8 models on ``data``'s val split (box and mask mAP)."""
    from edgeseg.eval.validate import validate
    from edgeseg.runtime import Runtime

    out: Dict[str, Any] = {"data": str(data), "split": "val", "imgsz": list(imgsz)}
    for key, path in (("float", float_path), ("int8", int8_path)):
        with Runtime(path, threads=threads) as rt:
            m = validate(rt, data, split="val")
        r = m.results_dict() if callable(m.results_dict) else m.results_dict
        out[key] = {"box_map": round(float(r["box/mAP50-95"]), 4), "box_map50": round(float(r["box/mAP50"]), 4),
                    "mask_map": round(float(r["seg/mAP50-95"]), 4), "mask_map50": round(float(r["seg/mAP50"]), 4)}
        out["images"] = int(getattr(m, "images", 0) or getattr(m, "num_images", 0) or 0) or None
    out["mask_map_drop"] = round(out["float"]["mask_map"] - out["int8"]["mask_map"], 4)
    out["box_map_drop"] = round(out["float"]["box_map"] - out["int8"]["box_map"], 4)
    return out


def accuracy_table(rep: Mapping[str, Any]) -> str:
    lines = [f"accuracy on {rep['data']} ({rep['split']}, {rep['imgsz'][0]}x{rep['imgsz'][1]}):",
             f"  {'model':<8}{'box mAP50-95':>14}{'box mAP50':>11}{'mask mAP50-95':>15}{'mask mAP50':>12}"]
    for key in ("float", "int8"):
        r = rep[key]
        lines.append(f"  {key:<8}{r['box_map']:>14.4f}{r['box_map50']:>11.4f}{r['mask_map']:>15.4f}{r['mask_map50']:>12.4f}")
    lines.append(f"  int8 - float: box {-rep['box_map_drop'] * 100:+.2f} points, mask {-rep['mask_map_drop'] * 100:+.2f} points")
    return "\n".join(lines)
