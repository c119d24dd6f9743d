"""``edgeseg data``: dataset tools (COCO -> YOLO conversion, label checks)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .common import echo_err, translate_errors

SHOW_ISSUES = 20


@click.group()
def data() -> None:
    """Dataset tools: convert COCO JSON to the YOLO format, check labels.

    \b
    Example:
      edgeseg data convert-coco instances_val2017.json --images val2017/ --out coco-yolo/
      edgeseg data check coco128-seg.yaml
    """


@data.command("convert-coco")
@click.argument("annotations", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the images the JSON names (default: found next to the JSON).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created; must be new or empty unless --overwrite).")
@click.option("--split", default=None, help="Split name (default: from the JSON name, instances_val2017 -> val2017).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--no-images", is_flag=True, help="Write labels and the YAML only, without linking/copying images.")
@translate_errors
def convert_coco_cmd(annotations: Path, images: Optional[Path], out: Path, split: Optional[str], overwrite: bool,
                     no_images: bool) -> None:
    """Convert a COCO instances JSON (polygons, RLE) to a YOLO segmentation dataset.

    Writes OUT/images/<split>/ (hard links, or copies), OUT/labels/<split>/*.txt with one
    normalized polygon per object, and OUT/<split>.yaml. Crowd regions are skipped (the YOLO
    format cannot hold them); multi-part objects are joined into one outline. The output folder
    appears atomically.

    \b
    Example:
      edgeseg data convert-coco annotations/instances_val2017.json --images val2017/ --out coco-val-yolo/
      edgeseg val -m yolov8n-seg.onnx -d coco-val-yolo/val2017.yaml
    """
    from ..eval.datasets import convert_coco

    report = convert_coco(annotations, images, out, split=split, overwrite=overwrite, copy_images=not no_images,
                          progress=True)
    for issue in report["issues"][:SHOW_ISSUES]:
        echo_err(f"skipped: {issue}")
    if len(report["issues"]) > SHOW_ISSUES:
        echo_err(f"... and {len(report['issues']) - SHOW_ISSUES} more")
    click.echo(f"{report['images']} images, {report['instances']} objects in {report['labels']} label files"
               + (f", {report['crowd_skipped']} crowd regions skipped" if report["crowd_skipped"] else "")
               + f" -> {report['yaml']}")


@data.command("check")
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--split", default="val", show_default=True, help="Split of a YAML dataset.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image folder of a COCO JSON.")
@translate_errors
def check(dataset: Path, split: str, images: Optional[Path]) -> None:
    """Read a dataset's labels and list every malformed one as file:line: reason.

    Exits with status 1 when labels were skipped (useful in scripts).

    \b
    Example:
      edgeseg data check coco128-seg.yaml --split train
    """
    from ..eval.datasets import load_dataset

    ds = load_dataset(dataset, split=split, images=images)
    for issue in ds.issues:
        echo_err(str(issue))
    click.echo(f"{len(ds)} images, {ds.num_instances} objects, {len(ds.names)} classes, "
               f"{len(ds.issues)} label(s) skipped as malformed")
    if ds.issues:
        raise SystemExit(1)


@data.command("export-coco")
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--split", default="val", show_default=True, help="Split of a YAML dataset.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="COCO JSON to write.")
@translate_errors
def export_coco(dataset: Path, split: str, out: Path) -> None:
    """Write a dataset's labels as a COCO instances JSON (ground truth for other tools).

    Image and category ids match what `edgeseg val --save-json` writes, so both files can go
    straight into pycocotools or faster-coco-eval.

    \b
    Example:
      edgeseg data export-coco coco128-seg.yaml --out gt.json
      edgeseg val -m yolov8n-seg.onnx -d coco128-seg.yaml --save-json preds.json
    """
    import json

    from ..eval.datasets import load_dataset, to_coco
    from ..io import atomic_write

    ds = load_dataset(dataset, split=split)
    for issue in ds.issues[:SHOW_ISSUES]:
        echo_err(f"skipped label: {issue}")
    gt = to_coco(ds, progress=True)
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps(gt), encoding="utf-8")
    click.echo(f"{len(gt['images'])} images, {len(gt['annotations'])} objects -> {out}")
