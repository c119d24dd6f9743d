"""Inference backends, one module per vendor runtime (installed as ``edgeseg.runtimes``).

Each module defines one :class:`edgeseg.backend.Backend` subclass decorated with
:func:`edgeseg.backend.register`; :func:`edgeseg.backend.backend_classes` imports every module of
this package to fill the registry, so a new backend is one new file here (modules named
``_something`` are private helpers and are not imported). The vendor library is imported only when
a model is opened, never when the module is imported.
"""
