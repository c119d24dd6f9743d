"""Where the real test material lives (../shared/assets) and helpers that skip cleanly when it is absent.

Import as `from _assets import ...` (tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODELS = ASSETS / "models"
IMAGES = ASSETS / "images"
REFERENCE = ASSETS / "reference"
COCO8_VAL = ASSETS / "datasets" / "coco8-seg" / "images" / "val"


def require_assets(*paths: Path) -> None:
    """Skip the calling test when the shared test material is not there."""
    for p in paths or (ASSETS,):
        if not p.exists():
            pytest.skip(f"test asset {p} not found (tests expect ../shared/assets beside the repo)")


def image_path(name: str) -> Path:
    """'bus' / 'zidane' from images/, COCO ids from coco8-seg val."""
    return IMAGES / f"{name}.jpg" if name in ("bus", "zidane") else COCO8_VAL / f"{name}.jpg"


def load_reference(model_stem: str, image: str) -> Dict[str, Any]:
    path = REFERENCE / f"{model_stem}__{image}.json"
    require_assets(path)
    return json.loads(path.read_text())
