"""``edgeseg predict``: run a model on images, folders, globs or video files."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from ..errors import ImageReadError, SourceError
from .common import model_options, runtime_kwargs, translate_errors


@click.command()
@model_options
@click.option("--source", "-s", required=True, help="Image, video, folder, or glob such as 'images/*.jpg' (quote it).")
@click.option("--retina-masks", is_flag=True, help="Crop masks at full source resolution (slower, sharper edges).")
@click.option("--save", "save_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for annotated images (and annotated .mp4 for videos).")
@click.option("--json", "json_out", default=None, metavar="FILE|-", help="Write results as JSON to FILE, or '-' for stdout.")
@click.option("--masks", "mask_format", type=click.Choice(["rle", "polygon", "none"]), default="rle", show_default=True,
              help="How masks appear in the JSON: COCO RLE (compressed counts), polygons in source pixels, or omitted.")
@translate_errors
def predict(**kw: Any) -> None:
    """Run a model on images, folders, globs or video files; save annotated output and JSON.

    \b
    Example:
      edgeseg predict --model yolov8n-seg.onnx --source bus.jpg --save out/ --json out/results.json
      edgeseg predict -m n-seg.tflite -s 'photos/*.jpg' --conf 0.4 --classes 0 --json -

    An unreadable image is reported and skipped; the command exits with status 1 at the end if
    any input failed.
    """
    from ..io import atomic_write, expand_sources, is_video, read_image
    from ..runtime import Runtime
    from tqdm import tqdm

    source, save_dir, json_out = kw.pop("source"), kw.pop("save_dir"), kw.pop("json_out")
    mask_format: Optional[str] = kw.pop("mask_format")
    mask_format = None if mask_format == "none" else mask_format
    retina = kw.pop("retina_masks")
    rt_args = runtime_kwargs(kw)
    files = expand_sources(source)
    records: List[Dict[str, Any]] = []
    failures: List[Tuple[str, str]] = []
    with Runtime(retina_masks=retina, **rt_args) as rt:
        bar = tqdm(files, desc="predict", unit="file", disable=len(files) < 2 or None, file=sys.stderr)
        for f in bar:
            try:
                if is_video(f):
                    records.extend(_predict_video(rt, f, save_dir, mask_format))
                    continue
                img = read_image(f)
                res = rt(img)
                res.path = str(f)
            except (ImageReadError, SourceError) as exc:
                failures.append((str(f), str(exc)))
                continue
            records.append(res.to_dict(masks=mask_format))
            if save_dir is not None:
                _save_image(res.plot(), Path(save_dir) / f.name)
        bar.close()
    if json_out is not None:
        doc = {"model": str(rt_args["model"]), "results": records}
        text = json.dumps(doc)
        if json_out == "-":
            click.echo(text)
        else:
            with atomic_write(json_out) as tmp:
                tmp.write_text(text, encoding="utf-8")
    n_det = sum(len(r["detections"]) for r in records)
    click.echo(f"{len(records)} image(s)/frame(s), {n_det} detection(s)"
               + (f"; annotated output in {save_dir}" if save_dir else ""), err=True)
    if failures:
        click.echo(f"{len(failures)} input(s) failed:", err=True)
        for path, why in failures:
            click.echo(f"  {path}: {why}", err=True)
        sys.exit(1)


def _save_image(img: Any, path: Path) -> None:
    import cv2

    from ..io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        ok, buf = cv2.imencode(path.suffix if path.suffix else ".jpg", img)
        if not ok:
            raise ImageReadError(f"{path}: cannot encode the annotated image")
        tmp.write_bytes(buf.tobytes())


def _predict_video(rt: Any, path: Path, save_dir: Optional[Path], mask_format: Optional[str]) -> List[Dict[str, Any]]:
    """Every frame of a video file, in order; optionally an annotated .mp4 in ``save_dir``."""
    import contextlib

    import cv2

    from ..io import atomic_write

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: cannot open the video (expected a file OpenCV's FFmpeg backend can read)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out: List[Dict[str, Any]] = []
    target = Path(save_dir) / (path.stem + ".mp4") if save_dir is not None else None
    try:
        with (atomic_write(target) if target is not None else contextlib.nullcontext()) as tmp:
            writer = None
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    res = rt(frame)
                    res.path = str(path)
                    d = res.to_dict(masks=mask_format)
                    d["frame"] = len(out)
                    out.append(d)
                    if tmp is not None:
                        if writer is None:
                            h, w = frame.shape[:2]
                            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                        writer.write(res.plot())
                if not out:
                    raise SourceError(f"{path}: no frames could be decoded")
            finally:
                if writer is not None:
                    writer.release()
    finally:
        cap.release()
    return out
