"""Exceptions raised by edgeseg. Every message states what was expected and what was found."""
from __future__ import annotations


class EdgesegError(Exception):
    """Base class of every error edgeseg raises on purpose."""


class ModelLoadError(EdgesegError):
    """A model file is missing, corrupt, of the wrong format, or not a YOLO segmentation/detection model."""


class BackendUnavailableError(EdgesegError):
    """The backend a model needs is not installed; the message names the pip extra to install."""


class LayoutError(EdgesegError):
    """The model's outputs could not be matched to a known YOLO output layout."""


class InputError(EdgesegError, ValueError):
    """An argument or an input array is invalid (wrong shape, dtype, range, option value)."""


class InferenceError(EdgesegError):
    """A backend failed while running a loaded model (a vendor or device error, not bad input);
    the message names the backend and the model, the vendor exception is chained."""

    @classmethod
    def from_vendor(cls, model: str, backend: str, exc: BaseException) -> "InferenceError":
        """The error for ``exc``, raised by the vendor library of ``backend`` running ``model``
        (raise it ``from exc``)."""
        return cls(f"{model}: the {backend} backend failed during inference ({type(exc).__name__}: {vendor_message(exc)})")


def vendor_message(exc: BaseException) -> str:
    """A vendor exception's message, shortened to its first meaningful line(s)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return ("; ".join(lines[:2]) if lines else type(exc).__name__)[:300]


class ImageReadError(EdgesegError):
    """An image file could not be read or decoded; the message names the path."""


class SourceError(EdgesegError):
    """A video/camera/stream source cannot be opened or stopped delivering frames."""


class DatasetError(EdgesegError):
    """A dataset description or its files are missing or malformed."""


class ConversionError(EdgesegError):
    """A conversion stage failed; the message names the stage and the cause."""
