"""The live path: sources (files, cameras, streams), the threaded pipeline, sinks and the preview server.

Uses the core (``edgeseg.runtime``, results, io); the core never imports this package at module level
(``Runtime.stream`` imports :mod:`edgeseg.live.pipeline` when it is called).
"""
