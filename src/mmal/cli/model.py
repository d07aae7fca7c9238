"""CLI: train / score / evaluate (model stages).

``train`` remembers its flags: after a successful run, the values given on the command
line (``--learner``, ``--fusion``, ``--heads``, ``--seed``) are written into ``mmal.toml``
(``[model] learner / fusion / heads``, ``[train] seed``; one atomic rewrite), so the next
``train`` uses them unless given again. A failed ``train`` changes nothing.
``--finetune-towers`` is a one-off (slow) mode and is not remembered; set
``[train] finetune_towers = true`` to make it the default. The checkpoint of each round records the full
configuration it was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app, echo_json, epoch_lines, note, positive, progress_enabled
from mmal.errors import ConfigError

#: flag -> (mmal.toml section, key) for the flags ``train`` remembers.
REMEMBERED_TRAIN_FLAGS = {
    "--learner": ("model", "learner"),
    "--fusion": ("model", "fusion"),
    "--heads": ("model", "heads"),
    "--seed": ("train", "seed"),
}


@app.command()
def train(
    directory: Path = typer.Argument(...),
    learner: Optional[str] = typer.Option(None, "--learner", help="linear | late-fusion | fusion (remembered in mmal.toml [model] learner)"),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="none | avgpool | vlmae (remembered in mmal.toml [model])"),
    heads: Optional[str] = typer.Option(None, "--heads", help="fused | fused+unimodal (remembered in mmal.toml [model])"),
    seed: Optional[int] = typer.Option(None, "--seed", help="training seed (remembered in mmal.toml [train])"),
    finetune_towers: Optional[bool] = typer.Option(
        None, "--finetune-towers/--no-finetune-towers",
        help="also fine-tune the encoder towers end to end from the raw media (slow on CPU; meant for GPU, "
             "[train] device = 'cuda'); `mmal score` then re-encodes with the tuned towers. Default: mmal.toml [train] finetune_towers",
    ),
):
    """Train the round's classifier on the labeled items (cached features); checkpoint per round."""
    from mmal.loop.workspace_round import train_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.schema import check_value

    given = {"--learner": learner, "--fusion": fusion, "--heads": heads, "--seed": seed}
    given = {k: v for k, v in given.items() if v is not None}
    for flag, value in given.items():
        section, key = REMEMBERED_TRAIN_FLAGS[flag]
        check_value(section, key, value, where=flag)
    ws = Workspace(directory)  # validates mmal.toml, state.sqlite and items.parquet first
    if ws.n_classes == 0 and not ws.current_labels():
        raise ConfigError(f"{ws.dir}: no labeled items and no classes yet; import labels with `mmal label {ws.dir} FILE` first")
    kwargs = dict(fusion=fusion, heads=heads, seed=seed, finetune_towers=finetune_towers, progress=progress_enabled())
    if learner is not None:
        kwargs["learner"] = learner
    if epoch_lines():
        kwargs["log"] = note
    note(f"train: {ws.dir}: fitting the round's model")
    out = train_workspace(directory, **kwargs)
    if given:
        ws = Workspace(directory)
        for flag, value in given.items():
            section, key = REMEMBERED_TRAIN_FLAGS[flag]
            ws.config.setdefault(section, {})[key] = value
        ws.save_config()
        out["remembered"] = {f"{REMEMBERED_TRAIN_FLAGS[f][0]}.{REMEMBERED_TRAIN_FLAGS[f][1]}": v for f, v in given.items()}
    echo_json(out)


@app.command()
def score(
    directory: Path = typer.Argument(...),
    coalitions: bool = typer.Option(False, "--coalitions", help="also store V(S) for BMMAL"),
    mc_samples: int = typer.Option(0, "--mc-samples", help="MC-dropout passes for BALD (0 = none)"),
    engine: str = typer.Option("local", "--engine", help="local (default) or ray: run the pool-sized work on a Ray cluster"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray://host:10001 or auto; default $RAY_ADDRESS, else a local Ray"),
):
    """Score every item with the round's model; writes rounds/<n>/pool (ScoredPool memmaps)."""
    from mmal.engine import score_workspace
    from mmal.workspace import Workspace

    positive(mc_samples, "--mc-samples", minimum=0)
    ws = Workspace(directory)
    note(f"score: {ws.dir}: scoring every item" + (" with coalitions" if coalitions else "")
         + (f" and {mc_samples} MC-dropout passes" if mc_samples else ""))
    echo_json(score_workspace(directory, engine=engine, ray_address=ray_address, coalitions=coalitions,
                              mc_samples=mc_samples, progress=progress_enabled()))


@app.command()
def evaluate(directory: Path = typer.Argument(...)):
    """Test-split metrics of the round's scored pool; writes rounds/<n>/metrics.json."""
    from mmal.loop.workspace_round import evaluate_workspace
    from mmal.workspace import Workspace
    from mmal.cli._common import check_round_pool

    check_round_pool(Workspace(directory))
    echo_json(evaluate_workspace(directory), indent=1)


@app.command()
def pretrain(
    directory: Path = typer.Argument(...),
    name: str = typer.Option("default", "--name", help="stored under DIR/pretrain/NAME"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    dim: Optional[int] = typer.Option(None, "--dim"),
    prototypes: bool = typer.Option(True, "--prototypes/--no-prototypes", help="uni-modal prototype loss (METHODS F)"),
    n_prototypes: Optional[int] = typer.Option(None, "--n-prototypes"),
    include_test: bool = typer.Option(False, "--include-test"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="replace an existing pre-training of this name"),
):
    """MMSSL pre-training (002 ch. 4) on the unlabeled pool; stores per-modality embeddings for cold start."""
    from mmal.loop.pretrain import pretrain_workspace

    for flag, v in (("--epochs", epochs), ("--dim", dim), ("--n-prototypes", n_prototypes)):
        positive(v, flag)
    cfg = {k: v for k, v in {"epochs": epochs, "dim": dim, "n_prototypes": n_prototypes}.items() if v is not None}
    meta = pretrain_workspace(directory, name=name, include_test=include_test, force=force, prototypes=prototypes,
                              seed=seed, **cfg)
    echo_json({k: meta[k] for k in ("name", "n_items", "n_train", "modalities", "metrics", "seconds") if k in meta}, indent=1)
