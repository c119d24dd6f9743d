"""``edgeseg data``: dataset tools (COCO -> YOLO conversion, label checks, synthetic data)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .common import echo_err, translate_errors

SHOW_ISSUES = 20


@click.group()
def data() -> None:
    """Dataset tools: convert COCO JSON to the YOLO format, check labels, make synthetic data.

    \b
    Example:
      edgeseg data convert-coco instances_val2017.json --images val2017/ --out coco-yolo/
      edgeseg data check coco128-seg.yaml
      edgeseg data synth --out synth/ --images 200
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


@data.command("synth")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created; must be new or empty unless --overwrite).")
@click.option("--images", type=click.IntRange(min=2), default=200, show_default=True,
              help="Number of images (the last --val-fraction of them form the val split).")
@click.option("--imgsz", type=click.IntRange(32, 4096), default=320, show_default=True, help="Image size (square).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed writes the same files.")
@click.option("--classes", default=None,
              help="How many classes (e.g. 3: the first three) or names, e.g. circle,star "
                   "(default: circle,rectangle,triangle,star,ellipse,hexagon).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of the images in the val split.")
@click.option("--video", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Also write a clip of this many seconds (OUT/video.mp4) with per-frame ground truth (OUT/video.jsonl).")
@click.option("--fps", type=click.IntRange(min=1), default=15, show_default=True, help="Frame rate of the clip.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@translate_errors
def synth(out: Path, images: int, imgsz: int, seed: int, classes: Optional[str], val_fraction: float, video: float,
          fps: int, overwrite: bool) -> None:
    """Write a synthetic instance-segmentation dataset: overlapping shapes on textured backgrounds.

    Shapes of several classes (circle, rectangle, triangle, star, ellipse, hexagon) with random
    scale, rotation and colour occlude each other; each label is the polygon of the visible part
    of its instance (YOLO segmentation format), so `edgeseg val` and `edgeseg train` read it
    as is. Writes OUT/synth.yaml, OUT/images/{train,val}/, OUT/labels/{train,val}/ and, with
    --video, OUT/video.mp4 plus OUT/video.jsonl (one JSON line per frame: track ids, classes,
    boxes, polygons). Deterministic for a --seed.

    \b
    Example:
      edgeseg data synth --out synth/ --images 500 --imgsz 320 --seed 0
      edgeseg data synth --out clip/ --images 10 --video 10 --fps 15
      edgeseg train --data synth/synth.yaml --model yolov8n-seg --epochs 30
    """
    from tqdm import tqdm

    from ..eval.datasets.synth import synth_dataset

    total = images + (max(1, int(round(video * fps))) if video > 0 else 0)
    with tqdm(total=total, desc="synth", unit="img", leave=False) as bar:
        report = synth_dataset(out, images=images, imgsz=imgsz, seed=seed, classes=classes, val_fraction=val_fraction,
                               video=video, fps=fps, overwrite=overwrite, progress=bar.update)
    click.echo(f"{report['train']} train + {report['val']} val images, {report['instances']} objects, "
               f"{len(report['names'])} classes -> {report['yaml']}")
    if "video" in report:
        click.echo(f"{report['frames']} frames -> {report['video']} (ground truth: {report['video_gt']})")
