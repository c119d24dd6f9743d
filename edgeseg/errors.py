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


class ImageReadError(EdgesegError):
    """An image file could not be read or decoded; the message names the path."""


class SourceError(EdgesegError):
    """A video/camera/stream source cannot be opened or stopped delivering frames."""


class DatasetError(EdgesegError):
    """A dataset description or its files are missing or malformed."""


class ConversionError(EdgesegError):
    """A conversion stage failed; the message names the stage and the cause."""
