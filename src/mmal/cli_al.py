"""CLI: select / label / simulate / demo (issue 4 stages)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

DEMO_STRATEGIES = ["random", "entropy", "entropy:0.5,margin:0.5", "lsb-knn", "entropy:0.8,lsb-lt:0.2"]
#: A small fusion model so the demo's 3 seeds x 5 strategies x rounds fit in minutes on 2 cores.
DEMO_MODEL = {"fusion": "vlmae", "d_model": 64, "n_layers": 1, "n_heads": 2, "mlp_hidden": 128}
DEMO_TRAIN = {"epochs": 20, "patience": 3}


def _parse_params(items: list[str]) -> dict:
    out = {}
    for kv in items or []:
        if "=" not in kv:
            from mmal.errors import ConfigError

            raise ConfigError(f"--param {kv!r}: expected NAME=VALUE")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def register(app: typer.Typer) -> None:
    from mmal.cli import _progress

    @app.command()
    def select(
        directory: Path = typer.Argument(...),
        strategy: str = typer.Option(..., "--strategy", help='name or mix, e.g. "entropy:0.8,lsb-lt:0.2"'),
        budget: int = typer.Option(..., "--budget"),
        seed: int = typer.Option(0, "--seed"),
        param: list[str] = typer.Option([], "--param", help="strategy parameter NAME=VALUE (repeatable), e.g. k=3, l_t=0.3"),
    ):
        """Select the next batch, record it, export CSV / JSONL / Label Studio tasks."""
        from mmal.loop.workspace_round import select_workspace

        typer.echo(json.dumps(select_workspace(directory, strategy, budget, seed=seed, params=_parse_params(param)), indent=1, default=float))

    @app.command()
    def label(directory: Path = typer.Argument(...), file: Path = typer.Argument(..., help="CSV, JSONL or Label Studio export JSON")):
        """Import labels: one transaction, idempotent; a bad row imports nothing."""
        from mmal.workspace import Workspace
        from mmal.workspace.annotate import import_labels

        typer.echo(json.dumps(import_labels(Workspace(directory), file)))

    @app.command()
    def simulate(
        items: Path = typer.Argument(..., help="items file with gold labels"),
        strategies: str = typer.Option(..., "--strategies", help="comma-separated; a mix uses ';' inside, e.g. entropy:0.8;lsb-lt:0.2"),
        init: int = typer.Option(..., "--init"),
        budget: int = typer.Option(..., "--budget"),
        rounds: int = typer.Option(..., "--rounds"),
        seeds: str = typer.Option("0,1,2", "--seeds"),
        out: Path = typer.Option(..., "--out"),
        fusion: Optional[str] = typer.Option(None, "--fusion"),
        heads: Optional[str] = typer.Option(None, "--heads"),
        encoders: Optional[str] = typer.Option(None, "--encoders"),
        epochs: Optional[int] = typer.Option(None, "--epochs"),
    ):
        """Simulated AL with an oracle; writes OUT/results.json and OUT/report.html."""
        from mmal.loop.simulate import simulate as run

        specs = [s.replace(";", ",").strip() for s in strategies.split(",") if s.strip()]
        specs = _join_mixes(specs)
        res = run(items, specs, init=init, budget=budget, rounds=rounds, seeds=[int(s) for s in seeds.split(",")], out=out,
                  encoders=encoders, model={"fusion": fusion, "heads": heads}, train={"epochs": epochs}, progress=_progress())
        for spec, d in res["strategies"].items():
            typer.echo(f"{spec:<32} AUBC {d['mean_aubc']:.4f} ± {d['std_aubc']:.4f}")
        typer.echo(str(Path(out) / "report.html"))

    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo"), "--out", help="folder for the dataset, cache and report"),
        seeds: str = typer.Option("0,1,2", "--seeds"),
        rounds: int = typer.Option(3, "--rounds"),
        init: int = typer.Option(50, "--init"),
        budget: int = typer.Option(50, "--budget"),
    ):
        """The main job: simulate AL on Tux Paint (random, entropy, stat mix, lsb-knn, stat+lsb-lt; VLMAE fusion)."""
        from mmal.data.datasets import build
        from mmal.loop.simulate import simulate as run

        out = Path(out)
        items = out / "tuxpaint" / "items.parquet"
        if not items.exists():
            typer.echo("demo: building the Tux Paint dataset")
            items = build("tuxpaint", out / "tuxpaint", seed=0, progress=_progress())
        res = run(items, DEMO_STRATEGIES, init=init, budget=budget, rounds=rounds, seeds=[int(s) for s in seeds.split(",")],
                  out=out / "simulation", model=dict(DEMO_MODEL), train=dict(DEMO_TRAIN), progress=_progress())
        for spec, d in res["strategies"].items():
            typer.echo(f"{spec:<32} AUBC {d['mean_aubc']:.4f} ± {d['std_aubc']:.4f}")
        typer.echo(f"report: {(out / 'simulation' / 'report.html').resolve()}")


def _join_mixes(specs: list[str]) -> list[str]:
    """'entropy:0.8', 'lsb-lt:0.2' split by the comma list -> one mix 'entropy:0.8,lsb-lt:0.2'.

    A strategy part with a share (name:float) joins the following shared parts until the
    shares sum to 1.
    """
    out, cur, total = [], [], 0.0
    for s in specs:
        if ":" in s and "," not in s:
            try:
                share = float(s.split(":", 1)[1])
            except ValueError:
                out.append(s)
                continue
            cur.append(s)
            total += share
            if total >= 1 - 1e-9:
                out.append(",".join(cur))
                cur, total = [], 0.0
        else:
            if cur:
                out.append(",".join(cur))
                cur, total = [], 0.0
            out.append(s)
    if cur:
        out.append(",".join(cur))
    return out
