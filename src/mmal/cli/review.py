"""CLI: the review page (`mmal serve`) and the workspace report (`mmal report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app


@app.command()
def serve(directory: Path = typer.Argument(..., help="workspace folder"),
          host: str = typer.Option("127.0.0.1", "--host", help="interface to bind; any non-loopback host requires a token"),
          port: int = typer.Option(8765, "--port", help="TCP port (0 = any free port; the printed URL names it)"),
          token: Optional[str] = typer.Option(None, "--token", help="session token (default: generated and printed when --host is not loopback)"),
          annotator: Optional[str] = typer.Option(None, "--annotator", help="name recorded with each label when the page gives none (default: your user name)")):
    """Review page for the current batch: label in the browser (keys 1-9, u = undo)."""
    from mmal.serve import serve as run

    run(directory, host=host, port=port, token=token, annotator=annotator)


@app.command()
def report(directory: Path = typer.Argument(..., help="workspace folder")):
    """HTML page per round in DIR/reports/ (metrics with class names, confusion, batch grid, caveats)."""
    from mmal.report.workspace import write_workspace_report

    typer.echo(str(write_workspace_report(directory)))
