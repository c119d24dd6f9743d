"""Metadata from every place it lives, parsed safely; class names from files."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import yaml
from click.testing import CliRunner

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg.cli import main
from edgeseg.io import load_names
from edgeseg.metadata import parse_metadata, parse_value, read_tflite_zip_metadata

TFLITE = MODELS / "yolov8n-seg-640-int8w.tflite"
COCO_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "airplane", 5: "bus"}


def full_names():
    return {i: COCO_NAMES.get(i, f"thing{i}") for i in range(80)}


def test_values_are_parsed_as_literals_never_executed():
    assert parse_value("{0: 'person', 1: 'bus'}") == {0: "person", 1: "bus"}
    assert parse_value("[640, 640]") == [640, 640]
    assert parse_value('{"a": 1}') == {"a": 1}
    assert parse_value("__import__('os').system('echo pwned')") == "__import__('os').system('echo pwned')"
    meta = parse_metadata({"names": "{0: 'a', 1: 'b'}", "imgsz": "[320, 480]", "stride": "32", "task": "segment"})
    assert meta.names == {0: "a", 1: "b"} and meta.imgsz == (320, 480) and meta.stride == 32


def test_ultralytics_zip_appended_to_tflite_is_read(tmp_path):
    require_assets(TFLITE)
    model = tmp_path / "with-meta.tflite"
    shutil.copy(TFLITE, model)
    with zipfile.ZipFile(model, "a", zipfile.ZIP_DEFLATED) as zf:  # what Ultralytics' exporter does
        zf.writestr("metadata.json", json.dumps({"names": full_names(), "imgsz": [640, 640], "stride": 32,
                                                 "task": "segment"}))
    assert read_tflite_zip_metadata(model)["imgsz"] == [640, 640]
    with Runtime(model) as rt:
        assert rt.info["metadata"]["source"] == "tflite metadata"
        res = rt(image_path("bus"))
    assert "bus" in res.class_names and "person" in res.class_names


@pytest.mark.parametrize("fmt", ["yaml-list", "yaml-dict", "dataset-yaml", "text"])
def test_names_files(tmp_path, fmt):
    names = [full_names()[i] for i in range(80)]
    if fmt == "yaml-list":
        f = tmp_path / "n.yaml"
        f.write_text(yaml.safe_dump(names))
    elif fmt == "yaml-dict":
        f = tmp_path / "n.yml"
        f.write_text(yaml.safe_dump(dict(enumerate(names))))
    elif fmt == "dataset-yaml":
        f = tmp_path / "data.yaml"
        f.write_text(yaml.safe_dump({"path": ".", "val": "images", "names": dict(enumerate(names))}))
    else:
        f = tmp_path / "names.txt"
        f.write_text("\n".join(names) + "\n")
    assert load_names(f)[5] == "bus" and len(load_names(f)) == 80


def test_names_option_on_a_model_without_metadata(tmp_path):
    require_assets(TFLITE)
    f = tmp_path / "coco.txt"
    f.write_text("\n".join(full_names()[i] for i in range(80)))
    out = CliRunner().invoke(main, ["predict", "-m", str(TFLITE), "-s", str(image_path("bus")), "--names", str(f),
                                    "--json", "-", "--masks", "none"])
    assert out.exit_code == 0, out.output
    names = {d["class_name"] for d in json.loads(out.stdout)["results"][0]["detections"]}
    assert {"bus", "person"} <= names
