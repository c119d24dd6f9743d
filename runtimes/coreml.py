"""CoreML backend: ``.mlpackage`` (ML program) and ``.mlmodel`` (neural network) files via coremltools.

Loading reads the model's spec on every OS: input/output names, shapes and types, and the
user-defined metadata (where Ultralytics and edgeseg keep ``names``, ``imgsz``, ``stride``...).
Prediction needs Apple's CoreML framework, so :meth:`CoreMLBackend.run` works on macOS only; on
Linux and Windows it raises :class:`~edgeseg.errors.BackendUnavailableError` saying so and naming
the formats that do run there.

Inputs may be multi-arrays (fed as given, e.g. float32 ``(1, 3, H, W)`` RGB 0-1) or images
(``ImageType``, as Ultralytics exports them): an image input is reported as float32
``(1, 3, H, W)`` (``(1, 1, H, W)`` for grayscale) and the 0-1 RGB array the runtime feeds is turned
into an 8-bit PIL image (the model's own image preprocessing, e.g. ``scale=1/255``, then applies).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import BackendUnavailableError, InputError, ModelLoadError

#: CoreML ArrayFeatureType.ArrayDataType value -> numpy dtype
ARRAY_DTYPES: Dict[int, Any] = {65568: np.float32, 65552: np.float16, 65600: np.float64, 131104: np.int32, 131080: np.int8}
#: compute_units option values (coremltools.ComputeUnit member names)
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
#: ImageFeatureType color spaces -> channels
IMAGE_CHANNELS = {"GRAYSCALE": 1, "RGB": 3, "BGR": 3, "GRAYSCALE_FLOAT16": 1}
#: platform.system() values on which CoreML can predict
PREDICT_SYSTEMS = ("Darwin",)
#: loggers that chatter while coremltools imports (it imports torch and torchao when they are
#: installed): "Failed to load _MLModelProxy" off macOS, untested torch versions, torchao kernels
IMPORT_LOGGERS = ("coremltools", "torch", "torchao")


def import_coremltools() -> Any:
    """``import coremltools`` with its import-time warnings held back (they say nothing about the
    model: off macOS its native proxies are always missing). ImportError propagates."""
    import logging

    loggers = [logging.getLogger(n) for n in IMPORT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import coremltools

        return coremltools
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _feature_spec(feature: Any, pb: Any) -> Tuple[TensorSpec, Optional[str]]:
    """TensorSpec of one feature description, plus its image color space (None for arrays)."""
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        arr = feature.type.multiArrayType
        shape: List[Optional[int]] = [int(s) for s in arr.shape]
        ranges = list(arr.shapeRange.sizeRanges) if arr.HasField("shapeRange") else []
        if ranges:
            shape = [int(r.lowerBound) if r.lowerBound == r.upperBound else None for r in ranges]
        dtype = ARRAY_DTYPES.get(int(arr.dataType), np.float32)
        return TensorSpec(feature.name, tuple(shape), np.dtype(dtype)), None
    if kind == "imageType":
        img = feature.type.imageType
        space = pb.ImageFeatureType.ColorSpace.Name(img.colorSpace)
        h = int(img.height) or None
        w = int(img.width) or None
        return TensorSpec(feature.name, (1, IMAGE_CHANNELS.get(space, 3), h, w), np.dtype(np.float32)), space
    # dictionaries, strings (classifier labels) and the like: reported, not fed
    return TensorSpec(feature.name, (), np.dtype(object)), None


def _resolve(model: Path) -> Path:
    ensure_file(model, [".mlpackage", ".mlmodel"])
    if model.suffix.lower() in CoreMLBackend.suffixes:
        return model
    if model.is_dir():
        found = sorted(p for p in model.iterdir() if p.suffix.lower() in CoreMLBackend.suffixes)
        if len(found) == 1:
            return found[0]
        names = ", ".join(p.name for p in found) or "none"
        raise ModelLoadError(f"{model}: expected one .mlpackage or .mlmodel in the folder, found {names}")
    raise ModelLoadError(f"{model}: expected a CoreML .mlpackage or .mlmodel, found suffix {model.suffix!r}")


@register
class CoreMLBackend(Backend):
    """Apple CoreML (Neural Engine, GPU, CPU); predicts on macOS only."""

    name = "coreml"
    suffixes = (".mlpackage", ".mlmodel")
    requires = ("coremltools",)
    extra = "coreml"
    priority = 50
    format = "coreml"

    @classmethod
    def handles(cls, path: Path) -> bool:
        if path.suffix.lower() in cls.suffixes:  # an .mlpackage is itself a folder
            return True
        return path.is_dir() and any(p.suffix.lower() in cls.suffixes for p in path.iterdir())

    def __init__(self, model: Path, *, threads: Optional[int] = None, compute_units: str = "ALL",
                 **options: Any) -> None:
        if options:
            raise InputError(f"coreml backend: unknown options {sorted(options)}; expected compute_units")
        if str(compute_units).upper() not in COMPUTE_UNITS:
            raise InputError(f"coreml compute_units must be one of {', '.join(COMPUTE_UNITS)}, found {compute_units!r}")
        self.path = _resolve(Path(model))
        if self.path.suffix.lower() == ".mlpackage" and not (self.path / "Manifest.json").is_file():
            raise ModelLoadError(f"{self.path}: not an ML package (expected Manifest.json inside the folder)")
        if self.path.suffix.lower() == ".mlmodel" and not self.path.is_file():
            raise ModelLoadError(f"{self.path}: expected an .mlmodel file, found a folder")
        try:
            ct = import_coremltools()
            from coremltools.proto import FeatureTypes_pb2
        except ImportError as exc:
            raise self.unavailable() from exc
        self.compute_units = str(compute_units).upper()
        self.threads = threads  # CoreML chooses its own threads; kept for describe()
        self.can_predict = platform.system() in PREDICT_SYSTEMS
        try:
            # off macOS, skip compiling the model (impossible there); the spec still loads
            self._model: Any = ct.models.MLModel(
                str(self.path), compute_units=ct.ComputeUnit[self.compute_units],
                skip_model_load=not self.can_predict,
            )
            spec = self._model.get_spec()
        except Exception as exc:  # coremltools raises protobuf/OS/Runtime errors for broken files
            raise ModelLoadError(f"{self.path}: coremltools could not load the model: {exc}") from exc
        desc = spec.description
        ins = [_feature_spec(f, FeatureTypes_pb2) for f in desc.input]
        if not ins:
            raise ModelLoadError(f"{self.path}: the model declares no inputs")
        self.inputs = [s for s, _ in ins]
        self._image_inputs = {s.name: space for s, space in ins if space is not None}
        self.outputs = [_feature_spec(f, FeatureTypes_pb2)[0] for f in desc.output]
        self.metadata: Dict[str, Any] = dict(desc.metadata.userDefined)
        for key, field in (("description", "shortDescription"), ("author", "author"),
                           ("license", "license"), ("version", "versionString")):
            value = getattr(desc.metadata, field, "")
            if value and key not in self.metadata:
                self.metadata[key] = value
        self.model_type = spec.WhichOneof("Type")

    def _to_image(self, name: str, x: np.ndarray) -> Any:
        try:
            from PIL import Image
        except ImportError as exc:
            raise BackendUnavailableError(
                f"coreml: input {name!r} is an image input, which needs Pillow: pip install pillow") from exc
        if x.ndim != 4 or x.shape[0] != 1:
            raise InputError(f"coreml image input {name!r}: expected (1, C, H, W), found {x.shape}")
        hwc = np.clip(np.rint(np.transpose(x[0], (1, 2, 0)) * 255.0), 0, 255).astype(np.uint8)
        space = self._image_inputs[name]
        if space.startswith("GRAYSCALE"):
            return Image.fromarray(hwc[..., 0], mode="L")
        if space == "BGR":
            hwc = hwc[..., ::-1]
        return Image.fromarray(np.ascontiguousarray(hwc), mode="RGB")

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``feeds``: name -> array as in :attr:`inputs`; returns every array output by name."""
        if not self.can_predict:
            raise BackendUnavailableError(
                f"CoreML can only run models on macOS; this is {platform.system()}. coremltools loads "
                f"{self.path.name} here (inputs, outputs, metadata) but prediction needs Apple's CoreML "
                "framework. On this machine use an ONNX, OpenVINO, TFLite or ncnn export of the model "
                "(edgeseg convert MODEL.pt --to onnx)."
            )
        if self._model is None:
            raise InputError("coreml backend is closed")
        data: Dict[str, Any] = {}
        for s in self.inputs:
            if s.name not in feeds:
                raise InputError(f"coreml: missing input {s.name!r}; expected {[i.name for i in self.inputs]}")
            x = feeds[s.name]
            data[s.name] = self._to_image(s.name, x) if s.name in self._image_inputs else np.ascontiguousarray(x)
        out = self._model.predict(data)  # vendor errors are translated once, by Runtime.infer
        return {k: np.asarray(v) for k, v in out.items() if isinstance(v, (np.ndarray, np.generic, list))}

    def close(self) -> None:
        self._model = None

    def describe(self) -> Dict[str, Any]:
        return {"compute_units": self.compute_units, "model_type": self.model_type,
                "can_predict": self.can_predict, "platform": platform.system()}
