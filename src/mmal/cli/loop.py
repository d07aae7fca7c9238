"""CLI: select / label / simulate / demo (active-learning loop stages)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app, echo_json, positive, progress_enabled
from mmal.errors import ConfigError, MmalError


def _parse_params(items: list[str]) -> dict:
    out = {}
    for kv in items or []:
        if "=" not in kv:
            raise ConfigError(f"--param {kv!r}: expected NAME=VALUE")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _with_fix(err: MmalError, ws_dir) -> MmalError:
    """A strategy's missing need (:class:`mmal.select.registry.MissingNeedError`) with the command that provides it."""
    from mmal.select.registry import MissingNeedError

    if isinstance(err, MissingNeedError):
        return ConfigError(err.message(ws_dir))
    return err


@app.command()
def select(
    directory: Path = typer.Argument(...),
    strategy: Optional[str] = typer.Option(None, "--strategy", help='name or mix, e.g. "entropy:0.8,lsb-lt:0.2" (default: mmal.toml [select] strategy)'),
    budget: Optional[int] = typer.Option(None, "--budget", help="items to select, >= 1 (default: mmal.toml [select] budget)"),
    seed: int = typer.Option(0, "--seed"),
    param: list[str] = typer.Option([], "--param", help="strategy parameter NAME=VALUE (repeatable), e.g. k=3, l_t=0.3"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the selection, record and export nothing"),
    append: bool = typer.Option(False, "--append", help="add another batch to the current round (default: one batch per round)"),
    pretrain: str = typer.Option("default", "--pretrain", help="cold start: stored MMSSL embeddings to use (`mmal pretrain --name`)"),
    engine: str = typer.Option("local", "--engine", help="local (default) or ray: run the pool-sized work on a Ray cluster"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray://host:10001 or auto; default $RAY_ADDRESS, else a local Ray"),
):
    """Select the next batch, record it, export CSV / JSONL / Label Studio tasks (one unit, under the workspace lock)."""
    from mmal.cli._common import check_round_pool
    from mmal.workspace import Workspace

    positive(budget, "--budget")
    params = _parse_params(param)
    ws = Workspace(directory)
    where = "--strategy" if strategy is not None else f"{ws.dir / 'mmal.toml'}: [select] strategy"
    strategy = strategy if strategy is not None else ws.setting("select", "strategy")
    budget = budget if budget is not None else ws.setting("select", "budget")
    if not strategy:
        raise ConfigError(f"no strategy: pass --strategy NAME or set [select] strategy in {ws.dir / 'mmal.toml'}")
    if budget is None:
        raise ConfigError(f"no budget: pass --budget N or set [select] budget in {ws.dir / 'mmal.toml'}")
    from mmal.loop.pretrain import cold_select_workspace, workspace_has_labels
    from mmal.select import shares_note
    from mmal.select.spec import parse_spec

    try:  # the spec's own errors, named where the spec came from
        parse_spec(strategy)
    except ConfigError as e:
        if where == "--strategy":
            raise ConfigError(f"--strategy {strategy!r}: {e}") from None
        raise ConfigError(f"{where} = {strategy!r}: {e}; fix the value or pass --strategy") from None

    cold = not workspace_has_labels(directory)
    if not cold:
        check_round_pool(ws)
    msg = shares_note(strategy)
    if msg:
        print(f"mmal: note: {msg}", file=sys.stderr)
    try:
        if cold:  # nothing labeled yet: cold-start strategies only
            out = cold_select_workspace(directory, strategy, int(budget), seed=seed, params=params, pretrain=pretrain,
                                        dry_run=dry_run, append=append)
        else:
            from mmal.engine import select_workspace as engine_select

            out = engine_select(directory, strategy, int(budget), engine=engine, ray_address=ray_address, seed=seed,
                                params=params, dry_run=dry_run, append=append)
    except MmalError as e:
        raise _with_fix(e, ws.dir) from None
    for w in out.get("warnings", []) or []:
        print(f"mmal: warning: {w}", file=sys.stderr)
    for n in out.get("notes", []) or []:
        print(f"mmal: note: {n}", file=sys.stderr)
    echo_json(out, indent=1)


@app.command()
def label(directory: Path = typer.Argument(...),
          file: Path = typer.Argument(..., help="CSV, JSONL or Label Studio export (JSON, JSON_MIN or CSV)"),
          allow_unbatched: bool = typer.Option(False, "--allow-unbatched", help="accept labels for items in no batch"),
          allow_new_classes: bool = typer.Option(False, "--allow-new-classes", help="accept class names not in the workspace (the trained model becomes stale)")):
    """Import labels: one transaction, idempotent; a bad row imports nothing."""
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels

    stats = import_labels(Workspace(directory), file, allow_unbatched=allow_unbatched, allow_new_classes=allow_new_classes)
    for w in stats.get("warnings", []) or []:
        print(f"mmal: warning: {w}", file=sys.stderr)
    echo_json(stats)


@app.command()
def export(directory: Path = typer.Argument(...),
           round_: int = typer.Option(..., "--round", help="round whose batches to re-export"),
           media_root: Optional[Path] = typer.Option(None, "--media-root", help="write media paths relative to this folder; paths outside it are refused"),
           media_url: Optional[str] = typer.Option(None, "--media-url", help="URL template for media: {path} = path under the media root, {id} = item id (default /data/local-files/?d={path}; see docs/labelstudio.md)")):
    """Re-export a round's batches (CSV, JSONL, Label Studio tasks + config)."""
    from mmal.workspace.annotate import export_round

    out = export_round(directory, round_, media_root=media_root, media_url=media_url)
    for n in out.get("notes", []) or []:
        print(f"mmal: note: {n}", file=sys.stderr)
    echo_json(out, indent=1)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not out:
        raise ConfigError(f"{flag}: give at least one value")
    return out


@app.command()
def simulate(
    items: Path = typer.Argument(..., metavar="WS_OR_ITEMS", help="a workspace folder (made by `mmal init` + `mmal encode`; read only), or an items file with gold labels"),
    strategies: str = typer.Option(..., "--strategies", help='runs separated by "|", the parts of a mix by ",", e.g. "random|entropy|entropy:0.8,lsb-lt:0.2"'),
    init: int = typer.Option(..., "--init"),
    budget: int = typer.Option(..., "--budget"),
    rounds: int = typer.Option(..., "--rounds"),
    seeds: str = typer.Option("0,1,2", "--seeds"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (an items file needs it; a workspace's default is DIR/simulations/<UTC time>)"),
    gold_column: Optional[str] = typer.Option(None, "--gold-column", help="workspace: the column of its items holding the gold labels (class ids or names), e.g. one kept with `mmal init --extra-columns`"),
    gold: Optional[Path] = typer.Option(None, "--gold", help="workspace: a label file with the gold labels (CSV or JSONL: id,label)"),
    learner: Optional[str] = typer.Option(None, "--learner", help="a learner of the task (binary / multiclass: auto, late-fusion, linear, fusion; relevance: auto-relevance, cosine, probe, hcmrm); default the workspace's learner (mmal.toml model.learner), else the task's (auto, auto-relevance)"),
    init_strategy: Optional[str] = typer.Option(None, "--init-strategy", help="cold-start strategy for the initial set (kmeans, typiclust, probcover, activeft, mmcsal, ...; default random)"),
    fusion: Optional[str] = typer.Option(None, "--fusion"),
    heads: Optional[str] = typer.Option(None, "--heads"),
    encoders: Optional[str] = typer.Option(None, "--encoders", help="items file only: encoder specs (a workspace uses the ones it was encoded with)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    task: Optional[str] = typer.Option(None, "--task", help="items file only: binary | multiclass | relevance (default: inferred from the items)"),
    metric: Optional[str] = typer.Option(None, "--metric", help="test metric of the AUBC (default: the task's headline: binary r_at_p80, multiclass macro_f1, relevance spearman)"),
    top_up: str = typer.Option("random", "--top-up", help="strategy that fills a batch returned short of --budget, so every strategy is compared at equal label counts (default random); 'none' leaves it short"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no status lines on stderr (warnings still shown); same as MMAL_PROGRESS=0"),
):
    """Simulated AL with an oracle; writes OUT/results.json and OUT/report.html (docs/simulate.md).

    A workspace is only read: its cached features are reused, the gold labels come from --gold-column or --gold. An items file gives them in its label column; OUT/workspace is made and encoded first."""
    if quiet:
        import os

        os.environ["MMAL_PROGRESS"] = "0"
    for flag, v in (("--init", init), ("--budget", budget), ("--rounds", rounds), ("--epochs", epochs)):
        positive(v, flag)
    on_ws = items.is_dir()
    if on_ws and not (items / "mmal.toml").exists():
        raise ConfigError(f"{items} is a folder but not a workspace (no mmal.toml); give a workspace made by "
                          "`mmal init` + `mmal encode`, or an items file")
    if on_ws:
        for flag, v in (("--encoders", encoders), ("--task", task)):
            if v is not None:
                raise ConfigError(f"{flag} applies to an items file; the workspace {items} keeps its own (see `mmal config {items}`)")
    else:
        for flag, v in (("--gold-column", gold_column), ("--gold", gold)):
            if v is not None:
                raise ConfigError(f"{flag} applies to a workspace folder; the items file {items} gives its gold labels in "
                                  "its 'label' column")
        if out is None:
            raise ConfigError("--out is needed with an items file (the folder for its workspace, results and report)")
    if task is not None:
        from mmal.tasks import get_task

        get_task(task)
    seed_list = _int_list(seeds, "--seeds")
    from mmal.select import parse_strategies, shares_note

    specs = parse_strategies(strategies)
    for s in specs:
        if note := shares_note(s):
            typer.echo(f"mmal: note: {note}", err=True)
    common = dict(init=init, budget=budget, rounds=rounds, seeds=seed_list, model={"fusion": fusion, "heads": heads},
                  train={"epochs": epochs}, metric=metric, learner=learner, init_strategy=init_strategy,
                  top_up=None if top_up.strip().lower() == "none" else top_up.strip(), progress=progress_enabled(),
                  log=_log)
    if on_ws:
        from mmal.loop.simulate import simulate_workspace

        res = simulate_workspace(items, specs, out=out, gold_column=gold_column, gold_file=gold, **common)
    else:
        from mmal.loop.simulate import simulate as run

        res = run(items, specs, out=out, encoders=encoders, task=task, **common)
    _print_aubc(res)
    typer.echo(str(Path(res["config"]["out"]) / "report.html"))


def _log(msg: str) -> None:
    from mmal.cli._common import note

    if msg.startswith("[simulate] warning"):  # warnings are shown under --quiet / MMAL_PROGRESS=0 too
        print(f"mmal: {msg}", file=sys.stderr, flush=True)
        return
    note(msg)


def _print_aubc(res) -> None:
    metric = res["config"]["metric"]
    n_seeds = len(res["config"]["seeds"])
    for spec, d in res["strategies"].items():
        spread = f" ± {d['std_aubc']:.4f}" if n_seeds > 1 else " (1 seed)"
        typer.echo(f"{spec:<32} AUBC({metric}) {d['mean_aubc']:.4f}{spread}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="folder for the dataset, cache and report"),
    seeds: str = typer.Option("0,1,2", "--seeds"),
    rounds: int = typer.Option(3, "--rounds"),
    init: int = typer.Option(50, "--init"),
    budget: int = typer.Option(50, "--budget"),
):
    """The main job: simulate AL on Tux Paint (see mmal.loop.demo for the strategies and model)."""
    from mmal.loop.demo import run_demo

    for flag, v in (("--init", init), ("--budget", budget), ("--rounds", rounds)):
        positive(v, flag)
    res = run_demo(out, seeds=_int_list(seeds, "--seeds"), rounds=rounds, init=init, budget=budget, progress=progress_enabled(),
                   log=_log)
    _print_aubc(res)
    typer.echo(f"report: {res.get('report', Path(out) / 'simulation' / 'report.html')}")
