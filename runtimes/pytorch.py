"""The ``torch`` backend, for discovery: it runs checkpoints and TorchScript exports and lives with
the torch model family in :mod:`edgeseg.converters.torch_backend` (importing it does not import
torch)."""
from edgeseg.converters.torch_backend import TorchBackend

__all__ = ["TorchBackend"]
