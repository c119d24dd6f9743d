"""Evaluation: datasets, COCO metrics, ``val``, ``verify`` and ``bench``.

Uses the core; the core never imports this package at module level (``Runtime.val`` imports
:mod:`edgeseg.eval.validate` when it is called).
"""
