"""Read a TFLite flatbuffer directly: tensors, quantization, operators, and whether (and how much
of) the model was compiled for the Edge TPU. No TFLite runtime, no ``flatbuffers`` package:
the few flatbuffer rules needed are implemented here, with every offset checked against the file.

    >>> m = read_tflite("yolov8n-seg_full_integer_quant_edgetpu.tflite")
    >>> m.edgetpu, [t.name for t in m.inputs], [op.name for op in m.cpu_ops]
    >>> for op in list_ops(m): print(op.name, op.input_dtypes, op.output_dtypes)

Flatbuffer layout used (schema.fbs of TFLite): a table starts with a signed offset back to its
vtable (u16 vtable size, u16 table size, u16 field offsets); reference fields hold a u32 offset
forward from the field itself; vectors and strings start with a u32 length.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import ModelLoadError

__all__ = ["TFLiteModel", "TFLiteTensor", "TFLiteOp", "read_tflite", "list_ops", "EDGETPU_CUSTOM_OP",
           "BUILTIN_OPS", "TENSOR_TYPES"]

#: the custom op the Edge TPU compiler puts in place of the part of the graph it maps to the TPU
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
IDENTIFIER = b"TFL3"

#: BuiltinOperator names by code (TFLite schema.fbs, in order from 0)
BUILTIN_OPS: Tuple[str, ...] = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION
LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH
CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM
ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE
TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK
LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD
RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N
GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE
HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE
ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU
DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT
""".split())

#: TensorType names by code, as numpy dtype names where numpy has one
TENSOR_TYPES: Tuple[str, ...] = (
    "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8", "float64",
    "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16", "int2", "uint4",
    "float8_e4m3fn", "float8_e5m2",
)


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor: ``shape`` as stored (``-1`` in ``shape_signature`` marks a dynamic dimension);
    ``scale``/``zero_point`` per channel (one entry for per-tensor quantization, empty if none)."""

    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: str
    scale: Tuple[float, ...] = ()
    zero_point: Tuple[int, ...] = ()
    shape_signature: Tuple[int, ...] = ()

    @property
    def quantized(self) -> bool:
        return bool(self.scale) and any(s != 0.0 for s in self.scale)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.name, "shape": [None if s < 0 else s for s in (self.shape_signature or self.shape)],
                             "dtype": self.dtype}
        if self.quantized:
            if len(self.scale) == 1:
                d["quantization"] = {"scale": self.scale[0], "zero_point": self.zero_point[0] if self.zero_point else 0}
            else:
                d["quantization"] = {"per_channel": len(self.scale)}
        return d


@dataclass(frozen=True)
class TFLiteOp:
    """One operator of the main graph: its builtin name (``CONV_2D``) or custom code
    (``edgetpu-custom-op``), and the dtypes of its input and output tensors."""

    index: int
    name: str
    custom: bool
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    input_dtypes: Tuple[str, ...]
    output_dtypes: Tuple[str, ...]

    @property
    def edgetpu(self) -> bool:
        return self.custom and self.name == EDGETPU_CUSTOM_OP


@dataclass
class TFLiteModel:
    """What a ``.tflite`` file holds (main subgraph)."""

    path: Path
    version: int
    description: str
    tensors: List[TFLiteTensor]
    inputs: List[TFLiteTensor]
    outputs: List[TFLiteTensor]
    ops: List[TFLiteOp]
    subgraphs: int
    metadata: List[str] = field(default_factory=list)

    @property
    def edgetpu(self) -> bool:
        """Whether the Edge TPU compiler mapped (part of) this model to the TPU."""
        return any(op.edgetpu for op in self.ops)

    @property
    def cpu_ops(self) -> List[TFLiteOp]:
        """Operators that run on the CPU (all of them for a model not compiled for the Edge TPU)."""
        return [op for op in self.ops if not op.edgetpu]

    def op_counts(self, ops: Optional[Sequence[TFLiteOp]] = None) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for op in self.ops if ops is None else ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": str(self.path), "schema_version": self.version, "description": self.description,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "edgetpu": self.edgetpu, "edgetpu_ops": sum(op.edgetpu for op in self.ops),
            "ops": self.op_counts(), "cpu_ops": self.op_counts(self.cpu_ops), "subgraphs": self.subgraphs,
            "metadata": list(self.metadata),
        }


class _Reader:
    """Bounds-checked flatbuffer access over the bytes of one file."""

    def __init__(self, data: bytes, where: str) -> None:
        self.b = data
        self.n = len(data)
        self.where = where

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.where}: not a valid TFLite flatbuffer ({what})")

    def _unpack(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            raise self.fail(f"offset {pos} outside the {self.n}-byte file")
        return struct.unpack_from(fmt, self.b, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def field(self, table: int, i: int) -> Optional[int]:
        """Position of field ``i`` of the table at ``table``, or None when it is absent."""
        vt = table - self._unpack("<i", table)
        vsize = self._unpack("<H", vt)
        if 4 + 2 * i >= vsize:
            return None
        off = self._unpack("<H", vt + 4 + 2 * i)
        return table + off if off else None

    def scalar(self, table: int, i: int, fmt: str, default: Any) -> Any:
        pos = self.field(table, i)
        return default if pos is None else self._unpack("<" + fmt, pos)

    def ref(self, table: int, i: int) -> Optional[int]:
        pos = self.field(table, i)
        return None if pos is None else pos + self.u32(pos)

    def vector(self, table: int, i: int, elem: int) -> Tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        v = self.ref(table, i)
        if v is None:
            return 0, 0
        n = self.u32(v)
        if v + 4 + n * elem > self.n:
            raise self.fail(f"a vector of {n} elements at {v} runs past the end of the file")
        return v + 4, n

    def tables(self, table: int, i: int) -> List[int]:
        start, n = self.vector(table, i, 4)
        return [start + 4 * k + self.u32(start + 4 * k) for k in range(n)]

    def scalars(self, table: int, i: int, fmt: str) -> Tuple[Any, ...]:
        size = struct.calcsize(fmt)
        start, n = self.vector(table, i, size)
        return struct.unpack_from(f"<{n}{fmt}", self.b, start) if n else ()

    def string(self, table: int, i: int) -> str:
        start, n = self.vector(table, i, 1)
        return self.b[start: start + n].decode("utf-8", errors="replace") if n else ""


def read_tflite(path: Union[str, Path]) -> TFLiteModel:
    """Parse a ``.tflite`` file's main graph; raises ModelLoadError for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the model: {exc}") from exc
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise ModelLoadError(f"{path}: not a TFLite flatbuffer (expected identifier 'TFL3' at byte 4, "
                             f"found {data[4:8]!r})")
    r = _Reader(data, str(path))
    model = r.u32(0)
    version = r.scalar(model, 0, "I", 0)
    codes = []
    for oc in r.tables(model, 1):  # OperatorCode: deprecated_builtin_code, custom_code, version, builtin_code
        builtin = max(r.scalar(oc, 0, "b", 0), r.scalar(oc, 3, "i", 0))
        custom = r.string(oc, 1)
        is_custom = builtin == BUILTIN_OPS.index("CUSTOM") or bool(custom)
        name = custom or "CUSTOM" if is_custom else (BUILTIN_OPS[builtin] if 0 <= builtin < len(BUILTIN_OPS)
                                                     else f"BUILTIN_{builtin}")
        codes.append((name, is_custom, r.scalar(oc, 2, "i", 1)))
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise r.fail("no subgraph")
    g = subgraphs[0]
    tensors = []
    for k, t in enumerate(r.tables(g, 0)):
        code = r.scalar(t, 1, "b", 0)
        dtype = TENSOR_TYPES[code] if 0 <= code < len(TENSOR_TYPES) else f"type{code}"
        q = r.ref(t, 4)
        scale: Tuple[float, ...] = ()
        zp: Tuple[int, ...] = ()
        if q is not None:
            scale = tuple(float(s) for s in r.scalars(q, 2, "f"))
            zp = tuple(int(z) for z in r.scalars(q, 3, "q"))
        tensors.append(TFLiteTensor(k, r.string(t, 3), tuple(r.scalars(t, 0, "i")), dtype, scale, zp,
                                    tuple(r.scalars(t, 7, "i"))))

    def tensor(i: int) -> TFLiteTensor:
        if not 0 <= i < len(tensors):
            raise r.fail(f"tensor index {i} out of range ({len(tensors)} tensors)")
        return tensors[i]

    ops = []
    for k, op in enumerate(r.tables(g, 3)):
        ci = r.scalar(op, 0, "I", 0)
        if ci >= len(codes):
            raise r.fail(f"operator {k} uses op code {ci} of {len(codes)}")
        name, custom, ver = codes[ci]
        ins = tuple(int(i) for i in r.scalars(op, 1, "i"))
        outs = tuple(int(i) for i in r.scalars(op, 2, "i"))
        ops.append(TFLiteOp(k, name, custom, ver, ins, outs, tuple(tensor(i).dtype if i >= 0 else "none" for i in ins),
                            tuple(tensor(i).dtype for i in outs)))
    metadata = [r.string(m, 0) for m in r.tables(model, 6)]
    return TFLiteModel(path, version, r.string(model, 3), tensors, [tensor(i) for i in r.scalars(g, 1, "i")],
                       [tensor(i) for i in r.scalars(g, 2, "i")], ops, len(subgraphs), metadata)


def list_ops(model: Union[str, Path, TFLiteModel]) -> List[TFLiteOp]:
    """Every operator of the main graph, in execution order, with builtin name or custom code
    and the dtypes of its inputs and outputs (for op-support checks, e.g. the Edge TPU's)."""
    m = model if isinstance(model, TFLiteModel) else read_tflite(model)
    return list(m.ops)
