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


def quiet_loading() -> None:
    """No "Loading weights" bars from transformers / huggingface_hub when mmal's progress is off
    (``MMAL_PROGRESS=0`` or ``--quiet``): loading packaged weights is not a long step to watch."""
    import os

    if os.environ.get("MMAL_PROGRESS", "1") != "0":
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
