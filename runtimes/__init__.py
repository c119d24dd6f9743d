"""Inference backends, one module per vendor runtime (installed as ``edgeseg.runtimes``).

Each module defines one :class:`edgeseg.backend.Backend` subclass and registers it in
:data:`edgeseg.backend.REGISTRY` through its table entry. The vendor library is imported only
inside the module's ``load`` path, never at import time of ``edgeseg``.
"""
