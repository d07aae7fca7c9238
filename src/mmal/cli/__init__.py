"""Command line: one thin sub-command per stage (DESIGN.md). Logic lives in the packages.

Contract (docs/reliability.md):

- every :class:`mmal.errors.MmalError` becomes one line on stderr (``mmal: error: ...``) and
  exit code 2 — never a traceback;
- every usage error (unknown command or option, bad option value, missing argument) becomes
  one line (``mmal: usage error: ...; see `mmal CMD --help```) and exit code 2;
- ``mmal --version`` prints the version and exits 0.

Typer >= 0.29 vendors its own copy of click (``typer._click``) and raises *those* exception
classes, not ``click``'s; :func:`main` catches them (typer is pinned to a tested range in
pyproject.toml for that reason). ``MMAL_DEBUG=1`` re-raises errors with their traceback.

Commands live in one module per group: :mod:`mmal.cli.data` (dataset, init, encode, info),
:mod:`mmal.cli.model` (train, score, evaluate), :mod:`mmal.cli.loop` (select, label,
simulate, demo), :mod:`mmal.cli.review` (serve, report).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from typer._click import exceptions as _click_exc  # noqa: E402  (typer's vendored click)
from typer.exceptions import Abort as _TyperAbort  # noqa: E402
from typer.exceptions import Exit as _TyperExit  # noqa: E402

# importing a command module registers its commands; this order is the order of `mmal --help`
from mmal.cli import data as _data  # noqa: E402,F401,I001
from mmal.cli import model as _model  # noqa: E402,F401
from mmal.cli import loop as _loop  # noqa: E402,F401
from mmal.cli import review as _review  # noqa: E402,F401
from mmal.cli import caption as _caption  # noqa: E402,F401
from mmal.cli._common import app  # noqa: E402
from mmal.errors import MmalError  # noqa: E402

__all__ = ["app", "main"]


#: OSError numbers that mean the disk refused a write (named with the free space)
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_line(e) -> str:
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "mmal"
    return f"mmal: usage error: {_one_line(e.format_message()).rstrip('.')}; see `{path} --help`"


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or usage, 130 interrupted)."""
    import typer

    cmd = typer.main.get_command(app)
    debug = os.environ.get("MMAL_DEBUG", "0") not in ("", "0")
    try:
        rv = cmd.main(args=argv, prog_name="mmal", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except MmalError as e:
        if debug:
            raise
        print(f"mmal: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except _TyperExit as e:
        return int(e.exit_code)
    except _click_exc.NoArgsIsHelpError as e:  # `mmal` or a group alone: its help, exit 0
        typer.echo(e.ctx.get_help())
        return 0
    except _click_exc.UsageError as e:
        print(_usage_line(e), file=sys.stderr)
        return 2
    except _click_exc.ClickException as e:
        print(f"mmal: error: {_one_line(e.format_message())}", file=sys.stderr)
        return 2
    except (_TyperAbort, KeyboardInterrupt):
        print("mmal: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permission denied, a file vanishing: the environment, not the input
        if debug:
            raise
        from mmal.utils import storage_error

        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        full = storage_error(e, e.filename) if e.filename and e.errno in _DISK_ERRNOS else None
        print(f"mmal: error: {_one_line(full) if full else where + _one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:  # the workspace layer names the file; this is the last resort, still one line
        if debug:
            raise
        print(f"mmal: error: SQLite: {_one_line(e)}", file=sys.stderr)
        return 2


def _console() -> None:  # console-script wrapper: exit with main()'s code
    sys.exit(main())
