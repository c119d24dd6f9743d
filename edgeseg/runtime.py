"""``Runtime``: the embeddable API. One class runs any supported YOLO-seg export through its backend."""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union, overload

import numpy as np

from .backend import Backend, TensorSpec, select_backend
from .default_model import resolve as resolve_model
from .errors import EdgesegError, InferenceError, InputError, LayoutError, ModelLoadError
from .io import load_names, path_size, read_image, to_bgr
from .layout import OutputLayout, resolve_layout
from .metadata import ModelMeta, parse_metadata, read_sidecar
from .postprocess import Decoder, score_resolution_warning
from .preprocess import Letterbox, Preprocessor, is_nhwc
from .results import Results

__all__ = ["Runtime"]

log = logging.getLogger("edgeseg.runtime")

Source = Union[str, "os.PathLike[str]", np.ndarray]
T = TypeVar("T")
DEFAULT_IMGSZ = 640


class Runtime:
    """Run a YOLO segmentation (or detection) model on images, without torch.

    >>> rt = Runtime("yolov8n-seg.onnx", conf=0.25)
    >>> res = rt("bus.jpg")          # a path, an HxWx3 uint8 BGR array, or a list of them
    >>> res.boxes, res.scores, res.class_ids, res.masks.rle()

    Args:
        model: model file or export folder (.onnx, .tflite, OpenVINO .xml or folder, ncnn .param or
            folder, CoreML .mlpackage, .pt with the ``convert`` extra). None: the embedded default
            model (synthetic shapes only, see :mod:`edgeseg.default_model`), announced once.
        conf: confidence threshold (0-1). iou: NMS IoU threshold (0-1). max_det: detections kept.
        classes: keep only these class ids. imgsz: input size (int or (H, W)); fixed-shape models
            must match it, dynamic ones are letterboxed to it (rectangular, stride-padded).
        backend: ``"auto"`` or a backend name (``onnxruntime``, ``litert``, ``openvino``, ...).
        threads: inference threads. retina_masks: masks cropped at full source resolution.
        names: class names overriding the model's (dict, list, or a YAML / text file).
        agnostic_nms: NMS across classes. multi_label: a box is reported once for every class whose
            score passes ``conf`` (COCO-style evaluation, what ``val`` uses) instead of once for its
            best class (the default, as Ultralytics' predict). val_masks: masks scaled to the source
            the way Ultralytics' validation writes its COCO JSON (``scale_image``: a uint8 resize of
            the input-resolution mask) rather than as its predict does; ``val`` uses it. nms: ``"opencv"`` (``cv2.dnn.NMSBoxesBatched``, the default:
            same boxes kept, several times faster on thousands of candidates) or ``"numpy"``.
        **backend_options: passed to the backend (e.g. ``providers=`` for ONNX Runtime,
            ``delegate=``/``device=`` for LiteRT, ``device=``/``performance=`` for OpenVINO).

    Thread safety: a Runtime may be shared between threads. Pre- and postprocessing run in the
    calling thread; inference calls are serialized by an internal lock (vendor sessions are not
    all re-entrant). On LiteRT, a call on an image works in the interpreter's own tensors (no
    copies), so its pre- and postprocessing run under that lock too. For parallel inference,
    create one Runtime per thread.
    """

    def __init__(
        self,
        model: Optional[Union[str, "os.PathLike[str]"]] = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        classes: Optional[Sequence[int]] = None,
        imgsz: Optional[Union[int, Sequence[int]]] = None,
        backend: str = "auto",
        threads: Optional[int] = None,
        retina_masks: bool = False,
        names: Any = None,
        agnostic_nms: bool = False,
        nms: str = "opencv",
        multi_label: bool = False,
        val_masks: bool = False,
        **backend_options: Any,
    ) -> None:
        classes = _check_options(conf, iou, max_det, classes, nms)
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.path = Path(resolve_model(model, backend))  # type: ignore[arg-type]
        if not self.path.exists():
            raise ModelLoadError(f"model not found: {self.path}")
        backend_cls = select_backend(self.path, backend)
        self.backend: Backend = backend_cls(self.path, threads=threads, **backend_options)
        self._lock = threading.Lock()  # one inference at a time on the backend (shared with views)
        self._share = _ModelShare(self.backend, self._lock)
        self._closed = False
        try:
            self._setup(conf, iou, max_det, classes, imgsz, retina_masks, names, agnostic_nms, nms, bool(multi_label),
                        bool(val_masks))
        except BaseException:
            self.close()
            raise

    def _setup(self, conf: float, iou: float, max_det: int, classes: Optional[List[int]], imgsz: Any,
               retina_masks: bool, names: Any, agnostic: bool, nms: str, multi_label: bool = False,
               val_masks: bool = False) -> None:
        raw = dict(read_sidecar(self.path)) if self.path.suffix.lower() not in (".onnx", ".tflite") else {}
        source = "metadata.yaml" if raw else "none"
        if self.backend.metadata:
            raw.update(self.backend.metadata)
            source = self.backend.format + " metadata" + (" + metadata.yaml" if source != "none" else "")
        self.meta: ModelMeta = parse_metadata(raw, source=source)
        if self.meta.task and self.meta.task not in ("segment", "detect"):
            raise ModelLoadError(f"{self.path.name}: model task is {self.meta.task!r}; edgeseg runs 'segment' and 'detect' models")
        if names is not None:
            self.meta.names = load_names(names)
        images = [s for s in self.backend.inputs if len(s.shape) == 4]
        if len(images) != 1:
            raise ModelLoadError(
                f"{self.path.name}: expected one 4-D image input, found "
                + ", ".join(f"{s.name}{tuple(s.shape)}" for s in self.backend.inputs)
            )
        self.input_spec: TensorSpec = images[0]
        fixed = _fixed_hw(self.input_spec)
        #: (H, W) when the model's input size is fixed, None when it takes any size
        self.fixed_imgsz: Optional[Tuple[int, int]] = fixed
        want = _imgsz(imgsz)
        if fixed is not None:
            if want is not None and want != fixed:
                raise InputError(f"{self.path.name} has a fixed {fixed[0]}x{fixed[1]} input; imgsz={want[0]}x{want[1]} "
                                 f"cannot be used (export the model again at that size)")
            self.imgsz, rect = fixed, False
        else:
            self.imgsz = want or self.meta.imgsz or (DEFAULT_IMGSZ, DEFAULT_IMGSZ)
            rect = True
            s = self.meta.stride
            if self.imgsz[0] % s or self.imgsz[1] % s:
                raise InputError(f"imgsz {self.imgsz[0]}x{self.imgsz[1]} must be a multiple of the stride {s}")
        self._pre = Preprocessor(self.input_spec, self.imgsz, self.meta.stride, rect=rect)
        #: whether predict works in the backend's own tensors (fixed-shape, single-input models)
        self._in_place = self.backend.in_place and fixed is not None and len(self.backend.inputs) == 1
        self._out_specs = {s.name: s for s in self.backend.outputs}
        self._decoder_args = dict(conf=conf, iou=iou, max_det=max_det, classes=classes, retina_masks=retina_masks,
                                  agnostic=agnostic, nms_impl=nms, multi_label=multi_label, specs=self._out_specs,
                                  val_masks=val_masks)
        #: problems found in the model itself (e.g. collapsed int8 scores), each logged once on first use
        self.warnings: List[str] = []
        self._warned = False
        self._decoder: Optional[Decoder] = None
        self._options = dict(conf=conf, iou=iou, max_det=max_det, classes=classes, imgsz=imgsz,
                             retina_masks=retina_masks, names=names, agnostic_nms=agnostic, nms=nms,
                             multi_label=multi_label, val_masks=val_masks)
        self.conf, self.iou, self.max_det, self.classes, self.retina_masks = conf, iou, max_det, classes, retina_masks
        if fixed is not None and all(all(d is not None for d in s.shape) for s in self.backend.outputs):
            self._resolve({s.name: tuple(s.shape) for s in self.backend.outputs}, fixed)  # type: ignore[arg-type]

    # -- layout ---------------------------------------------------------------------------------
    def _resolve(self, shapes: Dict[str, Tuple[int, ...]], input_hw: Tuple[int, int]) -> Decoder:
        try:
            layout = resolve_layout(shapes, input_hw, self.meta)
        except LayoutError as exc:
            raise LayoutError(f"{self.path.name}: {exc}") from None
        if not self.meta.names:
            self.meta.names = {i: f"class{i}" for i in range(layout.nc)}
        self._decoder = Decoder(layout, **self._decoder_args)  # type: ignore[arg-type]
        warning = score_resolution_warning(layout, self._out_specs)
        self.warnings = [warning] if warning else []
        return self._decoder

    @property
    def layout(self) -> OutputLayout:
        """The resolved output layout (runs one warm-up inference when the shapes or the box
        format can only be read from real outputs)."""
        if self._decoder is None or self._decoder.layout.boxes_normalized is None:
            self.warmup()
        return self._decoder.layout  # type: ignore[union-attr]

    @property
    def names(self) -> Dict[int, str]:
        return self.meta.names

    # -- stages (the pipeline overlaps them in threads) ------------------------------------------
    def preprocess(self, img: np.ndarray) -> Tuple[Dict[str, np.ndarray], Letterbox]:
        """BGR uint8 image -> (input feeds by name, letterbox geometry)."""
        tensor, lb = self._pre(img)
        return {self.input_spec.name: tensor}, lb

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the backend; raw outputs by name (still quantized where the model is).

        The one boundary for vendor errors at inference: feeds that do not match the model's
        inputs raise :class:`InputError` before the backend is called; anything the vendor
        library raises (onnxruntime, LiteRT, OpenVINO, ncnn, CoreML) becomes an
        :class:`InferenceError` naming the backend and the model, with the vendor error chained."""
        with self._inference():
            _check_feeds(self.path.name, self.backend.inputs, feeds)
            try:
                return self.backend.run(feeds)
            except EdgesegError:
                raise
            except Exception as exc:  # vendor errors: InvalidArgument, RuntimeError, MemoryError...
                raise InferenceError.from_vendor(self.path.name, self.backend.name, exc) from exc

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """The inference lock, on a Runtime (and model) that is not closed."""
        if self._closed:
            raise InputError("this Runtime is closed")
        with self._lock:
            if self._share.closed:  # closed by another thread since the check above
                raise InputError("this Runtime is closed")
            yield

    def _run_in_place(self, img: np.ndarray, finish: Callable[[Dict[str, np.ndarray], Letterbox], T]
                      ) -> Tuple[T, Dict[str, float]]:
        """Preprocess, infer and ``finish(outputs, letterbox)`` in the backend's own tensors (see
        :meth:`Backend.run_in_place`: ``finish`` must keep no reference to ``outputs``), under the
        inference lock, since the next inference overwrites them; with the stage timings in ms."""
        name = self.input_spec.name
        t = [time.perf_counter()]
        geometry: List[Letterbox] = []

        def write(inputs: Dict[str, np.ndarray]) -> None:
            geometry.append(self._pre(img, out=inputs[name])[1])
            t.append(time.perf_counter())

        def read(outputs: Dict[str, np.ndarray]) -> T:
            t.append(time.perf_counter())
            return finish(outputs, geometry[0])

        with self._inference():
            result = self.backend.run_in_place(write, read)
        t.append(time.perf_counter())
        return result, {"preprocess": (t[1] - t[0]) * 1e3, "inference": (t[2] - t[1]) * 1e3,
                        "postprocess": (t[3] - t[2]) * 1e3}

    def postprocess(self, outputs: Dict[str, np.ndarray], lb: Letterbox, img: Optional[np.ndarray] = None,
                    path: Optional[str] = None) -> Results:
        """Raw outputs (quantized where the model is) -> :class:`Results` in source pixels."""
        dec = self._decoder or self._resolve({n: a.shape for n, a in outputs.items()}, lb.input_shape)
        if not self._warned:
            self._warned = True
            for w in self.warnings:
                log.warning("%s: %s", self.path.name, w)
        det = dec(outputs, lb)
        return Results(det.boxes, det.scores, det.class_ids, self.meta.names, lb.orig_shape,
                       masks=det.masks, path=path, image=img)

    def predict_one(self, source: Source) -> Results:
        """One image (path or array) -> Results, with per-stage timings in ``speed``."""
        path = None
        if isinstance(source, np.ndarray):
            img = to_bgr(source)
        elif isinstance(source, (str, os.PathLike)):
            path = str(source)
            img = read_image(source)
        else:
            raise InputError(f"expected an image path or an HxWx3 uint8 array, found {type(source).__name__}")
        if self._in_place:  # LiteRT: the letterbox and the decode work in the interpreter's tensors
            res, speed = self._run_in_place(img, lambda outputs, lb: self.postprocess(outputs, lb, img, path))
            res.speed = speed
            return res
        t0 = time.perf_counter()
        feeds, lb = self.preprocess(img)
        t1 = time.perf_counter()
        outputs = self.infer(feeds)
        t2 = time.perf_counter()
        res = self.postprocess(outputs, lb, img, path)
        t3 = time.perf_counter()
        res.speed = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return res

    @overload
    def __call__(self, source: Source) -> Results: ...

    @overload
    def __call__(self, source: List[Source]) -> List[Results]: ...

    def __call__(self, source: Any) -> Any:
        """Predict on a path, an array, or a list/tuple of them (returns a list then)."""
        if isinstance(source, (list, tuple)):
            return [self.predict_one(s) for s in source]
        return self.predict_one(source)

    predict = __call__

    def stream(self, source: Any, **kwargs: Any) -> Any:
        """Run on every frame of a camera, video, folder, glob, stream URL or GStreamer pipeline;
        iterate the returned :class:`~edgeseg.live.pipeline.Stream` for one Results per frame (capture,
        pre/postprocessing, inference and ``sinks`` overlap in threads; live sources skip stale
        frames). ``kwargs``: ``sinks``, ``max_frames``, ``pipelined``, ``handle_signals``,
        ``tracker`` (``"bytetrack"``, ``"botsort"``, a YAML file: sets ``res.track_ids``), ``analytics``
        (count lines and zones) and the source options (``width``, ``height``, ``fps``, ``live``, ...); see :func:`edgeseg.live.pipeline.stream`."""
        from .live.pipeline import stream

        return stream(self, source, **kwargs)

    def warmup(self) -> None:
        """One inference on a gray image (resolves the layout of dynamic models, warms caches)."""
        h, w = self.imgsz
        self.predict_one(np.full((h, w, 3), 114, np.uint8))

    # -- description ------------------------------------------------------------------------------
    @property
    def info(self) -> Dict[str, Any]:
        """What the runtime understood: format, backend, input, output layout, names, quantization."""
        layout = self.layout
        spec = self.input_spec
        size = path_size(self.path)
        return {
            "model": str(self.path),
            "size_bytes": size,
            "format": self.backend.format,
            "backend": self.backend.name,
            "backend_details": self.backend.describe(),
            "task": "segment" if layout.protos else "detect",
            "input": {
                **spec.to_dict(),
                "layout": "NHWC" if self._pre.nhwc else "NCHW",
                "imgsz": list(self.imgsz),
                "letterbox": "rectangular (stride-padded)" if self._pre.rect else "square",
                "color": "RGB 0-1" if not spec.quantized else "RGB, quantized",
            },
            "outputs": [s.to_dict() for s in self.backend.outputs],
            "output_layout": layout.to_dict(),
            "quantization": self._quantization(),
            "names": dict(self.meta.names),
            "metadata": self.meta.to_dict(),
            "options": {"conf": self.conf, "iou": self.iou, "max_det": self.max_det, "classes": self.classes,
                        "retina_masks": self.retina_masks, "multi_label": self._options["multi_label"]},
            "warnings": list(self.warnings),
        }

    def _quantization(self) -> Dict[str, Any]:
        q_in = self.input_spec.quantized
        q_out = [s.name for s in self.backend.outputs if s.quantized]
        weights = self.backend.describe().get("weights") or self.meta.quantization or "unknown"
        if q_in and q_out:
            summary = "full integer (quantized input and outputs)"
        elif q_in or q_out:
            summary = "mixed (quantized " + ("input" if q_in else "outputs") + ")"
        else:
            summary = f"float I/O, weights: {weights}"
        return {"summary": summary, "weights": weights, "input_quantized": q_in, "quantized_outputs": q_out}

    # -- lifetime ---------------------------------------------------------------------------------
    def with_options(self, **changes: Any) -> "Runtime":
        """A Runtime with other options (``conf``, ``iou``, ``max_det``, ``classes``, ``imgsz``,
        ``retina_masks``, ``names``, ``agnostic_nms``, ``nms``, ``multi_label``, ``val_masks``) that shares
        this one's loaded model: nothing is loaded twice, and this object keeps its own settings.

        The view and this Runtime are equal users of the one backend: each :meth:`close` (or garbage
        collection) ends that object only, and the backend is released when the last of them is
        closed. So closing a view leaves this Runtime working, closing this Runtime leaves its views
        working, and ``Runtime(path).with_options(...)`` (the base dropped at once) releases the
        model when the view is closed."""
        unknown = set(changes) - set(self._options)
        if unknown:
            raise InputError(f"with_options: unknown options {sorted(unknown)}; expected {sorted(self._options)}")
        if self._closed:
            raise InputError("this Runtime is closed")
        opts = {**self._options, **changes}
        opts["classes"] = _check_options(opts["conf"], opts["iou"], opts["max_det"], opts["classes"], opts["nms"])
        self._share.acquire()
        view = copy.copy(self)
        try:
            view._setup(opts["conf"], opts["iou"], opts["max_det"], opts["classes"], opts["imgsz"],
                        opts["retina_masks"], opts["names"], opts["agnostic_nms"], opts["nms"],
                        bool(opts["multi_label"]), bool(opts["val_masks"]))
        except BaseException:
            view.close()
            raise
        return view

    def close(self) -> None:
        """End this Runtime (later calls raise :class:`InputError`); the backend is released when
        this was the last open object sharing it (see :meth:`with_options`), after an inference
        running in another thread has finished. Idempotent."""
        if not getattr(self, "_closed", True):
            self._closed = True
            self._share.release()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"Runtime({str(self.path)!r}, backend={self.backend.name!r}, imgsz={self.imgsz})"

    def val(self, data: Any, **kwargs: Any) -> Any:
        """COCO-standard box and mask mAP on a dataset; see :func:`edgeseg.eval.validate.validate`."""
        from .eval.validate import validate

        return validate(self, data, **kwargs)


class _ModelShare:
    """A loaded backend and how many Runtime objects (a Runtime and its :meth:`Runtime.with_options`
    views) still use it; the last :meth:`release` closes it, under the inference lock."""

    def __init__(self, backend: Backend, infer_lock: threading.Lock) -> None:
        self.backend = backend
        self.users = 1
        self.closed = False
        self._infer_lock = infer_lock
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self.users <= 0:
                raise InputError("this Runtime's model is closed")
            self.users += 1

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            last = self.users == 0
        if last:
            with self._infer_lock:  # never under a running inference
                self.closed = True
                self.backend.close()


def _check_options(conf: Any, iou: Any, max_det: Any, classes: Any, nms: Any) -> Optional[List[int]]:
    """Validate the decoding options; returns ``classes`` as a list of ints (or None)."""
    _check_fraction("conf", conf)
    _check_fraction("iou", iou)
    if not isinstance(max_det, (int, np.integer)) or isinstance(max_det, bool) or max_det < 1:
        raise InputError(f"max_det must be a positive integer, got {max_det!r}")
    if nms not in ("numpy", "opencv"):
        raise InputError(f"nms must be 'numpy' or 'opencv', got {nms!r}")
    if classes is None:
        return None
    try:
        return [int(c) for c in classes]
    except (TypeError, ValueError):
        raise InputError(f"classes must be a list of integer class ids, got {classes!r}") from None


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{name} must be a number between 0 and 1, got {value!r}")


def _imgsz(value: Any) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        vals = [int(value)] * 2
    elif isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(isinstance(v, (int, np.integer)) for v in value):
        vals = [int(v) for v in value] * (2 if len(value) == 1 else 1)
    else:
        raise InputError(f"imgsz must be an int or (height, width), got {value!r}")
    if min(vals) < 32:
        raise InputError(f"imgsz must be at least 32 pixels, got {value!r}")
    return (vals[0], vals[1])


def _fixed_hw(spec: TensorSpec) -> Optional[Tuple[int, int]]:
    s = spec.shape
    h, w = (s[1], s[2]) if is_nhwc(s) else (s[2], s[3])
    return (int(h), int(w)) if h and w else None


def _check_feeds(model: str, specs: Sequence[TensorSpec], feeds: Any) -> None:
    """Feeds must name every input, as arrays of its dtype, rank and static sizes (batch aside)."""
    if not isinstance(feeds, dict):
        raise InputError(f"{model}: expected feeds as a dict of input name -> array, found {type(feeds).__name__}")
    names = [s.name for s in specs]
    if sorted(feeds) != sorted(names):
        raise InputError(f"{model}: expected inputs {names}, found {sorted(map(str, feeds))}")
    for s in specs:
        x = feeds[s.name]
        if not isinstance(x, np.ndarray):
            raise InputError(f"{model}: input {s.name!r} must be a numpy array, found {type(x).__name__}")
        if s.shape and (x.ndim != len(s.shape) or any(
                d is not None and d != n for i, (d, n) in enumerate(zip(s.shape, x.shape)) if i)):
            raise InputError(f"{model}: input {s.name!r} expects shape {tuple(s.shape)}, found {x.shape}")
        if s.dtype != np.dtype(object) and x.dtype != s.dtype:
            raise InputError(f"{model}: input {s.name!r} expects dtype {np.dtype(s.dtype).name}, found {x.dtype}")
