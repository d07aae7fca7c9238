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
    head: Optional[str] = typer.Option(None, "--head", help="relevance workspaces: hsoftmax (default) | bce | mse | ordinal"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="relevance workspaces, learner hcmrm: fine-tuning epochs (default 4)"),
    pretrain: Optional[str] = typer.Option(None, "--pretrain", help="relevance workspaces: start from DIR/pretrain/NAME (default: 'default' when present)"),
):
    """Train the round's model on the labeled items; checkpoint per round (relevance: docs/relevance.md)."""
    from mmal.loop.workspace_round import train_workspace
    from mmal.relevance.workspace import is_relevance
    from mmal.workspace import Workspace
    from mmal.workspace.schema import check_value

    if is_relevance(directory):  # the relevance task (issue 11): its own learners and heads
        from mmal.relevance.workspace import train_relevance_workspace

        for flag, v in (("--fusion", fusion), ("--heads", heads), ("--finetune-towers", finetune_towers)):
            if v is not None:
                raise ConfigError(f"{flag} applies to classification workspaces; {directory} is a relevance workspace")
        positive(epochs, "--epochs")
        note(f"train: {directory}: fitting the round's relevance model")
        echo_json(train_relevance_workspace(directory, learner=learner, head=head or "hsoftmax", epochs=epochs, seed=seed,
                                            pretrain=pretrain or "default", log=note if epoch_lines() else None))
        return
    for flag, v in (("--head", head), ("--epochs", epochs), ("--pretrain", pretrain)):
        if v is not None:
            raise ConfigError(f"{flag} applies to relevance workspaces (`mmal init --task relevance`)")
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
    from mmal.relevance.workspace import is_relevance

    if is_relevance(directory) and (coalitions or mc_samples or engine != "local"):
        raise ConfigError("a relevance workspace is scored locally with its level distribution only "
                          "(no --coalitions, --mc-samples or --engine ray)")
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
    objectives: Optional[str] = typer.Option(None, "--objectives", help="relevance workspaces: subset of itc,itm,mlm,pqvm (default all four)"),
    arch: str = typer.Option("dual", "--arch", help="relevance workspaces: dual (HCMRM) | single | text"),
):
    """Pre-training on the workspace's items: MMSSL (002 ch. 4) for classification, ITC/ITM/MLM/PQVM (003) for relevance."""
    from mmal.loop.pretrain import pretrain_workspace
    from mmal.relevance.workspace import is_relevance

    for flag, v in (("--epochs", epochs), ("--dim", dim), ("--n-prototypes", n_prototypes)):
        positive(v, flag)
    if is_relevance(directory):  # ITC / ITM / MLM / PQVM pre-training of the relevance model (003 §3.2)
        from mmal.relevance.workspace import pretrain_relevance_workspace

        if n_prototypes is not None or include_test:
            raise ConfigError("--n-prototypes and --include-test apply to MMSSL (classification workspaces)")
        meta = pretrain_relevance_workspace(directory, name=name, objectives=objectives or "itc,itm,mlm,pqvm",
                                            arch=arch, epochs=epochs or 3, seed=seed, force=force, dim=dim)
        echo_json({k: meta[k] for k in ("name", "objectives", "arch", "n_videos", "history", "seconds")}, indent=1)
        return
    if objectives is not None or arch != "dual":
        raise ConfigError("--objectives and --arch apply to relevance workspaces (`mmal init --task relevance`)")
    cfg = {k: v for k, v in {"epochs": epochs, "dim": dim, "n_prototypes": n_prototypes}.items() if v is not None}
    meta = pretrain_workspace(directory, name=name, include_test=include_test, force=force, prototypes=prototypes,
                              seed=seed, **cfg)
    echo_json({k: meta[k] for k in ("name", "n_items", "n_train", "modalities", "metrics", "seconds") if k in meta}, indent=1)
