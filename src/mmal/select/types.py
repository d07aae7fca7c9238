"""Compatibility alias: the core types live in :mod:`mmal.pool` (I/O in :mod:`mmal.workspace.pool_io`)."""

from mmal.pool import ScoredPool, Selection  # noqa: F401

__all__ = ["ScoredPool", "Selection"]
