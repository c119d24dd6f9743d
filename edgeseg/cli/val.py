"""``edgeseg val``: COCO-standard box and mask mAP of a model on a dataset, on the device itself."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import click

from .common import echo_err, parse_imgsz, translate_errors

#: skipped labels printed before "... and N more"
SHOW_ISSUES = 20


@click.command()
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path),
              help="Model file or export folder (.onnx, .tflite, OpenVINO, ncnn, .pt with the convert extra).")
@click.option("--data", "-d", required=True, type=click.Path(path_type=Path),
              help="YOLO dataset YAML (path/train/val/names) or COCO instances JSON.")
@click.option("--split", default="val", show_default=True, help="Split of a YAML dataset: train, val or test.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image folder of a COCO JSON (default: found next to the JSON).")
@click.option("--imgsz", default=None, help="Inference size, 640 or H,W (default: the model's own size).")
@click.option("--conf", type=float, default=0.001, show_default=True, help="Confidence threshold (keep it low for mAP).")
@click.option("--iou", type=float, default=0.7, show_default=True, help="NMS IoU threshold.")
@click.option("--max-det", type=int, default=300, show_default=True,
              help="Detections kept per image (COCO then scores the best 100 per image and class).")
@click.option("--single-label", is_flag=True,
              help="One class per box (its best), as predict reports it. Default: multi-label, a box counts "
                   "for every class whose score passes --conf (COCO-style, as Ultralytics' val).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per runtime call.")
@click.option("--backend", default="auto", show_default=True, help="Backend name or auto.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: the backend's choice).")
@click.option("--save-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the predictions as COCO results (bbox, score, compressed RLE masks).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
@click.option("--no-classes", is_flag=True, help="Print only the 'all' row of the table.")
@click.option("--coco-summary", is_flag=True, help="Also print COCO's 12-line summary (AP/AR by IoU, area, detections).")
@translate_errors
def val(model: Path, data: Path, split: str, images: Optional[Path], imgsz: Any, conf: float, iou: float,
        max_det: int, single_label: bool, batch: int, backend: str, threads: Optional[int], save_json: Optional[Path], as_json: bool,
        no_classes: bool, coco_summary: bool) -> None:
    """Validate a model: COCO-standard box and mask mAP50-95, mAP50, mAP75 and per-class APs.

    The numbers equal pycocotools' on the same predictions (IoU .50:.05:.95, 101-point
    precision, 100 detections per image, crowd regions ignored). Malformed labels are listed
    with file:line and skipped. Runs wherever the model runs: no torch needed.

    \b
    Example:
      edgeseg val --model yolov8n-seg.tflite --data coco128-seg.yaml
      edgeseg val -m yolov8n-seg.onnx -d coco128-seg.yaml --imgsz 320 --save-json preds.json
      edgeseg val -m best.onnx -d annotations/instances_val2017.json --images val2017/
    """
    from ..eval.validate import validate

    logging.getLogger("edgeseg.val").setLevel(logging.ERROR)  # issues are printed below instead
    metrics = validate(model, data, imgsz=parse_imgsz(imgsz), conf=conf, iou=iou, max_det=max_det, batch=batch,
                       split=split, images=images, save_json=save_json, progress=True,
                       backend=backend, threads=threads, single_label=single_label)
    for issue in metrics.issues[:SHOW_ISSUES]:
        echo_err(f"skipped label: {issue}")
    if len(metrics.issues) > SHOW_ISSUES:
        echo_err(f"... and {len(metrics.issues) - SHOW_ISSUES} more skipped labels")
    if metrics.issues:
        echo_err(f"{len(metrics.issues)} label(s) skipped as malformed")
    for w in metrics.warnings:
        echo_err(f"warning: {w}")
    if as_json:
        click.echo(json.dumps(metrics.to_dict(), indent=2, default=_jsonable))
    else:
        click.echo(metrics.table(per_class=not no_classes))
        if coco_summary:
            click.echo(metrics.coco_summary())
        s = metrics.speed
        click.echo(f"Speed: {s['preprocess']:.1f}ms preprocess, {s['inference']:.1f}ms inference, "
                   f"{s['postprocess']:.1f}ms postprocess, {s['metrics']:.1f}ms metrics per image "
                   f"({s['total']:.1f}ms total)")
    if metrics.json_path is not None:
        echo_err(f"predictions saved to {metrics.json_path}")


def _jsonable(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
