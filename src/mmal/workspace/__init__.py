"""The on-disk project: ``mmal.toml``, ``state.sqlite`` (WAL), ``items.parquet``, features, rounds."""

from mmal.workspace.workspace import Workspace, default_config, init_workspace

__all__ = ["Workspace", "init_workspace", "default_config"]
