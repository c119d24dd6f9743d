"""``edgeseg verify``: run two models on the same images and check that they agree."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from .common import parse_imgsz, translate_errors


@click.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--images", "-i", "images", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Image file or folder of images; repeat for more.")
@click.option("--conf", type=float, default=0.25, show_default=True, help="Confidence threshold for both models.")
@click.option("--iou", type=float, default=0.7, show_default=True, help="NMS IoU threshold for both models.")
@click.option("--imgsz", default=None, help="Input size for dynamic-shape models, 640 or H,W (fixed-shape models keep theirs).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Thresholds to apply (default: from the candidate's metadata, else fp32).")
@click.option("--reference-backend", default="auto", show_default=True, help="Backend for REFERENCE.")
@click.option("--candidate-backend", default="auto", show_default=True, help="Backend for CANDIDATE.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@translate_errors
def verify(reference: Path, candidate: Path, images: Tuple[Path, ...], conf: float, iou: float, imgsz: Optional[str],
           precision: Optional[str], reference_backend: str, candidate_backend: str, as_json: bool) -> None:
    """Check that CANDIDATE (e.g. an export) gives the same results as REFERENCE (e.g. the .pt).

    Both models run through the edgeseg Runtime on the same images (with the same input tensor
    where possible). Per image: detections matched by class and box IoU, the largest box error
    (source pixels), score error and the lowest mask IoU, judged against limits for the
    candidate's precision:

    \b
      fp32: box <= 1 px, score <= 0.005, mask IoU >= 0.99
      fp16: box <= 2 px, score <= 0.02,  mask IoU >= 0.97
      int8: box <= 4 px or 5% of the box, score <= 0.10, mask IoU >= 0.85

    Exit code 0 when every image passes, 1 otherwise.

    \b
    Example:
      edgeseg verify yolov8n-seg.pt yolov8n-seg.onnx --images photos/
      edgeseg verify yolov8n-seg.pt yolov8n-seg_openvino_model --images bus.jpg --images zidane.jpg
    """
    from ..eval.verify import verify as run_verify

    report = run_verify(reference, candidate, list(images), conf=conf, iou=iou, imgsz=parse_imgsz(imgsz),
                        precision=precision, reference_backend=reference_backend,
                        candidate_backend=candidate_backend, progress=not as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"reference: {reference}\ncandidate: {candidate}\n")
        click.echo(report.table())
    if not report.passed:
        raise SystemExit(1)
