"""The Typer app shared by the command modules, and small helpers they use."""

from __future__ import annotations

import json
import math
import os
import sys

import typer

from mmal.errors import ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="mmal: multimodal active learning and data expansion.",
)


def progress_enabled() -> bool:
    """Progress bars on (default) unless ``MMAL_PROGRESS=0``. Bars go to stderr (stdout stays JSON)."""
    on = os.environ.get("MMAL_PROGRESS", "1") != "0"
    if on:
        import rich

        rich.reconfigure(stderr=True)
    return on


def note(msg: str) -> None:
    """A status line on stderr (not part of the command's stdout result)."""
    if os.environ.get("MMAL_PROGRESS", "1") != "0":
        print(f"mmal: {msg}", file=sys.stderr, flush=True)


def _jsonable(o):
    try:
        v = float(o)
    except (TypeError, ValueError):
        return str(o)
    return v if math.isfinite(v) else None


def finite_json(o):
    """``o`` with every NaN / infinity replaced by ``None`` (JSON ``null``), numpy scalars and
    arrays turned into Python numbers and lists, tuples into lists; strict JSON can then
    hold it (``json.dumps(..., allow_nan=False)``). An undefined metric is ``null``, never ``NaN``."""
    if isinstance(o, dict):
        return {k: finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, (str, int)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if type(o).__module__ == "numpy":  # numpy scalars and arrays, without importing numpy here
        if hasattr(o, "tolist"):
            return finite_json(o.tolist())
    return o


def echo_json(obj, indent=None) -> None:
    """Print ``obj`` as strict JSON: NaN and infinity are ``null`` (:func:`finite_json`)."""
    typer.echo(json.dumps(finite_json(obj), indent=indent, default=_jsonable, allow_nan=False))


def positive(value, flag: str, *, minimum: int = 1):
    """``value`` if it is None or >= ``minimum``; else ConfigError naming the flag."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum}, got {value}")
    return value


def _version(value: bool):
    if value:
        from mmal import __version__

        typer.echo(f"mmal {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="print the version and exit"),
):
    """mmal: multimodal active learning and data expansion."""


def check_round_pool(ws) -> None:
    """Refuse a truncated scored pool of the current round with one line (before anything reads it)."""
    from mmal.loop.workspace_round import current_round
    from mmal.workspace.workspace import check_npy_files, check_parquet_files

    rnd = current_round(ws)
    folder = ws.round_dir(rnd) / "pool"
    if folder.is_dir():
        check_npy_files(folder, fix=f"run `mmal score {ws.dir}` again to rewrite the scored pool")
        check_parquet_files(folder, fix=f"run `mmal score {ws.dir}` again to rewrite the scored pool")
