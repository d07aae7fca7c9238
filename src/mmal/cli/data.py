"""CLI: dataset / init / encode / info (data and workspace stages)."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app, echo_json, positive, progress_enabled
from mmal.errors import ConfigError


def _names(text: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of names (``--classes``, ``--extra-columns``), or None when not given."""
    if text is None:
        return None
    out = [s.strip() for s in text.split(",")]
    if not any(out):
        raise ConfigError(f"{flag}: give at least one name, e.g. {flag} a,b")
    if "" in out:
        raise ConfigError(f"{flag} {text!r}: an empty name (two commas in a row, or a trailing comma?)")
    return out


@app.command()
def dataset(
    name: str = typer.Argument(..., help="a dataset of `mmal.data.datasets.DATASETS`: tuxpaint, tuxpaint-binary, tuxpaint-relevance, tuxpaint-scenes, oxygen-icons, oxygen-icons-binary, synthetic-video, synthetic-video-relevance, synthetic-embeddings"),
    out_dir: Path = typer.Argument(..., help="folder to write the items file and media into"),
    n: Optional[int] = typer.Option(None, "--n", help="number of items (default: the dataset's own)"),
    seed: int = typer.Option(0, "--seed"),
    audio_locale: str = typer.Option("fr", "--audio-locale", help="tuxpaint: locale of the spoken description when no English one exists"),
):
    """Build a dataset: writes OUT_DIR/items.parquet plus media."""
    from mmal.data.datasets import build

    positive(n, "--n")
    opts = {"audio_locale": audio_locale} if name == "tuxpaint" else {}
    path = build(name, out_dir, n=n, seed=seed, progress=progress_enabled(), **opts)
    typer.echo(str(path))


@app.command()
def init(
    directory: Path = typer.Argument(..., help="workspace folder to create"),
    items: Path = typer.Option(..., "--items", help="items file: .parquet, .csv or .jsonl"),
    task: Optional[str] = typer.Option(None, "--task", help="binary | multiclass | relevance (default: a 'query' column -> relevance, two classes -> binary, else multiclass)"),
    force: bool = typer.Option(False, "--force", help="replace an existing workspace"),
    n_classes: Optional[int] = typer.Option(None, "--n-classes", help="class count of integer labels, when some classes have no labeled item yet"),
    classes: Optional[str] = typer.Option(None, "--classes", help="declare the classes, e.g. cat,dog,bird (class ids in this order); any other class name in the file is refused"),
    extra_columns: Optional[str] = typer.Option(None, "--extra-columns", help="comma list of metadata columns to keep (not read by mmal); any other unknown column is refused"),
    all_extra_columns: bool = typer.Option(False, "--all-extra-columns", help="keep every unknown column as metadata"),
):
    """Validate an items file and create a workspace (mmal.toml, state.sqlite, items.parquet)."""
    from mmal.data.items import KNOWN_COLUMNS
    from mmal.workspace import init_workspace

    positive(n_classes, "--n-classes")
    extra = _names(extra_columns, "--extra-columns")
    if all_extra_columns:
        if extra is not None:
            raise ConfigError("--extra-columns and --all-extra-columns: give one of them")
        extra = True
    ws = init_workspace(directory, items, task=task, force=force, progress=progress_enabled(), n_classes=n_classes,
                        classes=_names(classes, "--classes"), extra_columns=extra)
    c = ws.counts()
    names = ws.label_names
    classes = f"{ws.n_classes} classes" + (f" ({', '.join(names)})" if names else "")
    typer.echo(f"workspace {ws.dir}: task {ws.task.name}, {c['items']} items, {c['labeled']} labeled, {classes}, "
               f"modalities {', '.join(ws.modalities)}")
    table = ws.items
    typer.echo("columns: " + "; ".join(f"{col} -> {role}" for col, role in ws.task.column_roles(table)))
    meta = [col for col in table.column_names if col not in (*KNOWN_COLUMNS, *ws.task.item_columns)]
    if meta:
        typer.echo(f"metadata (kept, not read): {', '.join(meta)}")
    if ws.n_classes == 0:
        typer.echo("note: the items file has no labels; label some items (`mmal label`) before `mmal train`", err=True)


@app.command()
def encode(
    directory: Path = typer.Argument(...),
    encoders: Optional[str] = typer.Option(None, "--encoders", help="comma list of specs, e.g. text:minilm,audio:whisper-base (default: mmal.toml [encoders])"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="items per encoder call (>= 1; default mmal.toml [encode] batch_size)"),
    engine: str = typer.Option("local", "--engine", help="local (default) or ray: run the pool-sized work on a Ray cluster"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray://host:10001 or auto; default $RAY_ADDRESS, else a local Ray"),
):
    """Fill the feature cache; a re-run encodes only what is missing."""
    from mmal.engine import encode_workspace

    positive(batch_size, "--batch-size")
    stats = encode_workspace(directory, engine=engine, ray_address=ray_address, encoders=encoders, batch_size=batch_size,
                             progress=progress_enabled())
    for s in stats:
        if "encoder" in s:
            typer.echo(f"{s['modality']:<6} {s['encoder']:<26} encoded {s['encoded']:>6}  cached {s['cached']:>6}  absent {s['absent']:>6}")
        else:
            typer.echo("  ".join(f"{k} {v}" for k, v in s.items()))


def _history(directory: Path, item_id: str, as_json: bool) -> None:
    """``mmal info WS --history ID``: every recorded change of one item's labels."""
    import datetime

    from mmal.errors import WorkspaceError
    from mmal.workspace import Workspace
    from mmal.workspace.state import item_splits, label_history

    ws = Workspace(directory)
    split = item_splits(ws)
    if item_id not in split:
        from mmal.data.items import suggest

        near = suggest(item_id, split) if len(split) <= 10_000 else None
        raise WorkspaceError(f"{ws.dir}: no item {item_id!r}" + (f" (did you mean {near!r}?)" if near else ""))
    rows = label_history(ws, item_id)
    current = ws.current_labels().get(item_id)
    if as_json:
        echo_json({"id": item_id, "split": split[item_id], "label": current, "history": rows}, indent=2)
        return
    names = ws.class_names()

    def show(k):
        if k is None:
            return "-"
        return f"{k} ({names[k]})" if 0 <= k < len(names) and names[k] != str(k) else str(k)

    typer.echo(f"item {item_id!r}  split {split[item_id]}  label {show(current)}")
    if not rows:
        typer.echo("no label recorded")
    for r in rows:
        at = datetime.datetime.fromtimestamp(r["at"]).isoformat(sep=" ", timespec="seconds")
        who = f"  annotator {r['annotator']}" if r["annotator"] else ""
        typer.echo(f"{at}  round {r['round']}  {show(r['old'])} -> {show(r['new'])}  source {r['source']}{who}")


def _class_list(names: list[str]) -> str:
    """`` (0 bad, 1 less, …)``: each class id with its name; empty when the names are the ids."""
    if all(n == str(i) for i, n in enumerate(names)):
        return ""
    return " (" + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + ")"


def _per_class(names: list[str], counts: dict) -> str:
    """``bad=1, less=0, …``: every class in id order (0 when none is labeled), then any other label."""
    shown = [f"{n}={counts.get(n, 0)}" for n in names]
    shown += [f"{k}={v}" for k, v in counts.items() if k not in names]
    return ", ".join(shown) if shown else "-"


@app.command()
def info(directory: Path = typer.Argument(...), as_json: bool = typer.Option(False, "--json"),
         history: Optional[str] = typer.Option(None, "--history", help="item id: print every change of its label (old, new, source, time) instead")):
    """Counts, modalities, labels and cache status of a workspace."""
    if history is not None:
        _history(directory, history, as_json)
        return
    from mmal.loop.workspace_round import workspace_info

    from mmal.workspace import Workspace

    data = workspace_info(directory)
    # The task's names (relevance: its levels) when mmal.toml has no [task] label_names.
    names = Workspace(directory).class_names()
    if as_json:
        echo_json({**data, "class_names": names}, indent=2)
        return
    typer.echo(f"workspace   {data['dir']}")
    typer.echo(f"task        {data['task']}  classes {data['n_classes']}" + _class_list(names))
    typer.echo(f"items       {data['counts']['items']}  splits {data['counts']['splits']}")
    typer.echo(f"labeled     {data['counts']['labeled']}  per class {_per_class(names, data['labels_per_class'])}")
    typer.echo("modalities  " + ", ".join(f"{m} ({n} items)" for m, n in data["modality_counts"].items()))
    typer.echo(f"rounds      {data['counts']['rounds']}  batches {data['counts']['batches']}")
    for m, s in data["features"].items():
        if "error" in s:
            typer.echo(f"features    {m}: {s['encoder']}: {s['error']}")
        else:
            typer.echo(f"features    {m}: {s['encoder']} [{s['fingerprint']}] {s['cached']}/{s['total']} cached")


@app.command("config")
def config_(directory: Path = typer.Argument(...), as_json: bool = typer.Option(False, "--json", help="JSON instead of TOML")):
    """Print the effective configuration: mmal.toml over the defaults (the workspace's learner only)."""
    import tomli_w

    from mmal.workspace import Workspace
    from mmal.workspace.schema import effective_config

    eff = effective_config(Workspace(directory).config)
    if as_json:
        echo_json(eff, indent=2)
        return

    def clean(d):  # TOML has no null: unset optional values (and lists holding one) are shown as comments
        out, unset = {}, []
        for k, v in d.items():
            if isinstance(v, dict):
                out[k] = clean(v)[0]
            elif v is None:
                unset.append(f"# {k} = (not set)")
            elif isinstance(v, (list, tuple)) and any(x is None for x in v):
                shown = ", ".join("none" if x is None else json.dumps(x) for x in v)
                unset.append(f"# {k} = [{shown}] (none: not set; see `mmal config --json`)")
            else:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out, unset

    for section, body in eff.items():
        values, unset = clean(body)
        typer.echo(tomli_w.dumps({section: values}).rstrip())
        for line in unset:
            typer.echo(line)
        typer.echo("")
