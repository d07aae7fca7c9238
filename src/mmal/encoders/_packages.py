"""Locate weight files inside installed weight packages (never the network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmal.errors import MissingPackageError


def package_dir(module: str, pypi: str, what: str) -> Path:
    """Directory of the installed Python package ``module`` (PyPI name ``pypi``).

    Raises
    ------
    MissingPackageError
        When the package is not installed; the message names ``pypi`` and ``what``.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(pypi, what)
    return Path(list(spec.submodule_search_locations)[0])


def require_file(path: Path, pypi: str, what: str) -> Path:
    """``path`` if it exists, else :class:`MissingPackageError` (a broken/partial install)."""
    if not Path(path).is_file():
        raise MissingPackageError(pypi, f"{what} (file {path} is missing; reinstall)")
    return Path(path)


def require_module(module: str, pypi: str, what: str):
    """Import ``module`` or raise :class:`MissingPackageError` naming ``pypi``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(pypi, what) from None
