"""Command line: one thin sub-command per stage (DESIGN.md). Logic lives in the packages.

Every :class:`mmal.errors.MmalError` becomes one line on stderr and exit code 2 —
never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

from mmal.errors import MmalError  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="mmal: multimodal active learning and data expansion.",
)


def _progress() -> bool:
    return os.environ.get("MMAL_PROGRESS", "1") != "0"


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
def dataset(
    name: str = typer.Argument(..., help="tuxpaint | synthetic-video | synthetic-embeddings"),
    out_dir: Path = typer.Argument(..., help="folder to write the items file and media into"),
    n: Optional[int] = typer.Option(None, "--n", help="number of items (default: the dataset's own)"),
    seed: int = typer.Option(0, "--seed"),
    audio_locale: str = typer.Option("fr", "--audio-locale", help="tuxpaint: locale of the spoken description when no English one exists"),
):
    """Build a dataset: writes OUT_DIR/items.parquet plus media."""
    from mmal.data.datasets import build

    opts = {"audio_locale": audio_locale} if name == "tuxpaint" else {}
    path = build(name, out_dir, n=n, seed=seed, progress=_progress(), **opts)
    typer.echo(str(path))


@app.command()
def init(
    directory: Path = typer.Argument(..., help="workspace folder to create"),
    items: Path = typer.Option(..., "--items", help="items file: .parquet, .csv or .jsonl"),
    task: str = typer.Option("classify", "--task", help="classify | relevance"),
    force: bool = typer.Option(False, "--force", help="replace an existing workspace"),
):
    """Validate an items file and create a workspace (mmal.toml, state.sqlite, items.parquet)."""
    from mmal.workspace import init_workspace

    ws = init_workspace(directory, items, task=task, force=force, progress=_progress())
    c = ws.counts()
    typer.echo(f"workspace {ws.dir}: {c['items']} items, {c['labeled']} labeled, modalities {', '.join(ws.modalities)}")


@app.command()
def encode(
    directory: Path = typer.Argument(...),
    encoders: Optional[str] = typer.Option(None, "--encoders", help="comma list of specs, e.g. text:minilm,audio:whisper-base (default: mmal.toml [encoders])"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
):
    """Fill the feature cache; a re-run encodes only what is missing."""
    from mmal.features.pipeline import encode_workspace

    stats = encode_workspace(directory, encoders=encoders, batch_size=batch_size, progress=_progress())
    for s in stats:
        typer.echo(f"{s['modality']:<6} {s['encoder']:<26} encoded {s['encoded']:>6}  cached {s['cached']:>6}  absent {s['absent']:>6}")


@app.command()
def info(directory: Path = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """Counts, modalities, labels and cache status of a workspace."""
    from mmal.features.pipeline import workspace_info

    data = workspace_info(directory)
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"workspace   {data['dir']}")
    typer.echo(f"task        {data['task']}  classes {data['n_classes']}")
    typer.echo(f"items       {data['counts']['items']}  splits {data['counts']['splits']}")
    typer.echo(f"labeled     {data['counts']['labeled']}  per class {data['labels_per_class']}")
    typer.echo("modalities  " + ", ".join(f"{m} ({n} items)" for m, n in data["modality_counts"].items()))
    typer.echo(f"rounds      {data['counts']['rounds']}  batches {data['counts']['batches']}")
    for m, s in data["features"].items():
        if "error" in s:
            typer.echo(f"features    {m}: {s['encoder']}: {s['error']}")
        else:
            typer.echo(f"features    {m}: {s['encoder']} [{s['fingerprint']}] {s['cached']}/{s['total']} cached")


def _register_optional_commands() -> None:
    """Commands of later stages register themselves here when their modules exist."""
    import importlib

    for mod in ("mmal.cli_train", "mmal.cli_al"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        m.register(app)


_register_optional_commands()


def main(argv=None) -> int:
    """Entry point: run the Typer app; MmalError -> one line on stderr, exit 2."""
    import click

    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="mmal", standalone_mode=False)
        return int(rv or 0) if isinstance(rv, int) else 0
    except MmalError as e:
        msg = " ".join(str(e).split("\n"))
        print(f"mmal: error: {msg}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        print("mmal: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mmal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def _console() -> None:  # console-script wrapper: exit with main()'s code
    sys.exit(main())
