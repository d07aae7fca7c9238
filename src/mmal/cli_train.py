"""CLI: train / score / evaluate (issue 3 stages)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    from mmal.cli import _progress

    @app.command()
    def train(
        directory: Path = typer.Argument(...),
        fusion: Optional[str] = typer.Option(None, "--fusion", help="none | avgpool | vlmae"),
        heads: Optional[str] = typer.Option(None, "--heads", help="fused | fused+unimodal"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        finetune_towers: bool = typer.Option(
            False, "--finetune-towers",
            help="also fine-tune the encoder towers end to end from the raw media (slow on CPU; meant for GPU, "
                 "[train] device = 'cuda'); `mmal score` then re-encodes with the tuned towers",
        ),
    ):
        """Train the fusion classifier on the labeled items (cached features); checkpoint per round."""
        from mmal.loop.workspace_round import train_workspace

        typer.echo(json.dumps(train_workspace(directory, fusion=fusion, heads=heads, seed=seed,
                                              finetune_towers=True if finetune_towers else None, progress=_progress())))

    @app.command()
    def score(
        directory: Path = typer.Argument(...),
        coalitions: bool = typer.Option(False, "--coalitions", help="also store V(S) for BMMAL"),
        mc_samples: int = typer.Option(0, "--mc-samples", help="MC-dropout passes for BALD"),
    ):
        """Score every item with the round's model; writes rounds/<n>/pool (ScoredPool memmaps)."""
        from mmal.loop.workspace_round import score_workspace

        typer.echo(json.dumps(score_workspace(directory, coalitions=coalitions, mc_samples=mc_samples, progress=_progress())))

    @app.command()
    def evaluate(directory: Path = typer.Argument(...)):
        """Test-split metrics of the round's scored pool; writes rounds/<n>/metrics.json."""
        from mmal.loop.workspace_round import evaluate_workspace

        typer.echo(json.dumps(evaluate_workspace(directory), indent=1, default=float))
