"""CLI: the review page (`mmal serve`), the Label Studio ML backend (`mmal labelstudio-backend`) and the workspace report (`mmal report`)."""

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


@app.command("labelstudio-backend")
def labelstudio_backend(
        directory: Path = typer.Argument(..., help="workspace folder"),
        host: str = typer.Option("127.0.0.1", "--host", help="interface to bind (default loopback)"),
        port: int = typer.Option(9090, "--port", help="TCP port (0 = any free port; the printed URL names it)"),
        token: Optional[str] = typer.Option(None, "--token", envvar="MMAL_BACKEND_TOKEN",
                                            help="the password of basic auth, or a Bearer token (default: $MMAL_BACKEND_TOKEN, else generated and printed)"),
        user: str = typer.Option("mmal", "--user", help="the user name of basic auth"),
        learner: Optional[str] = typer.Option(None, "--learner", help="learner Start Training trains (default: the workspace's)"),
        strategy: Optional[str] = typer.Option(None, "--strategy", help="strategy of the batch Start Training selects (default: the strategy of mmal.toml's select section)"),
        budget: Optional[int] = typer.Option(None, "--budget", help="size of that batch (default: the budget of mmal.toml's select section)"),
        max_body_bytes: int = typer.Option(16 << 20, "--max-body-bytes", help="largest request body read (larger: 413)")):
    """Label Studio ML backend: /predict serves the scored pool, /webhook stores annotations and trains (docs/labelstudio.md)."""
    from mmal.cli._common import positive
    from mmal.serve.ml_backend_app import serve_backend

    positive(budget, "--budget")
    positive(max_body_bytes, "--max-body-bytes")
    serve_backend(directory, host=host, port=port, token=token, user=user, learner=learner, strategy=strategy,
                  budget=budget, max_body_bytes=max_body_bytes)


@app.command()
def report(directory: Path = typer.Argument(..., help="workspace folder")):
    """HTML page per round in DIR/reports/ (metrics with class names, confusion, batch grid, caveats)."""
    from mmal.report.workspace import write_workspace_report

    typer.echo(str(write_workspace_report(directory)))
