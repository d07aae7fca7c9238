"""CLI: train / score / evaluate / pretrain (model stages), for every task.

``train`` remembers its flags: after a successful run, the values given on the command
line (``--learner``, ``--fusion``, ``--heads``, ``--head``, ``--seed``) are written into
``mmal.toml`` (``[model] learner / fusion / heads / head``, ``[train] seed``; one atomic
rewrite), so the next ``train`` uses them unless given again. A failed ``train`` changes
nothing. ``--finetune-towers`` is a one-off (slow) mode and is not remembered; set
``[train] finetune_towers = true`` to make it the default. The checkpoint of each round
records the full configuration it was trained with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app, echo_json, note, positive, progress_enabled
from mmal.errors import ConfigError

#: flag -> (mmal.toml section, key) for the flags ``train`` remembers.
REMEMBERED_TRAIN_FLAGS = {
    "--learner": ("model", "learner"),
    "--fusion": ("model", "fusion"),
    "--heads": ("model", "heads"),
    "--head": ("model", "head"),
    "--seed": ("train", "seed"),
}


@app.command()
def train(
    directory: Path = typer.Argument(...),
    learner: Optional[str] = typer.Option(None, "--learner", help="a learner of the workspace's task (remembered in mmal.toml [model] learner): binary / multiclass auto (default) | late-fusion | linear | fusion; relevance auto-relevance (default) | cosine | probe | hcmrm"),
    fusion: Optional[str] = typer.Option(None, "--fusion", help="late-fusion / fusion: none | avgpool | vlmae (remembered in mmal.toml [model])"),
    heads: Optional[str] = typer.Option(None, "--heads", help="fused | fused+unimodal (remembered in mmal.toml [model])"),
    seed: Optional[int] = typer.Option(None, "--seed", help="training seed (remembered in mmal.toml [train])"),
    finetune_towers: Optional[bool] = typer.Option(
        None, "--finetune-towers/--no-finetune-towers",
        help="also fine-tune the encoder towers end to end from the raw media (slow on CPU; meant for GPU, "
             "[train] device = 'cuda'); `mmal score` then re-encodes with the tuned towers. Default: mmal.toml [train] finetune_towers",
    ),
    head: Optional[str] = typer.Option(None, "--head", help="relevance learners: hsoftmax (default) | bce | mse | ordinal (remembered in mmal.toml [model])"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="training epochs of a torch learner for this run ([train] epochs)"),
    pretrain: Optional[str] = typer.Option(None, "--pretrain", help="hcmrm: start from DIR/pretrain/NAME (default: 'default' when present)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no status lines on stderr (warnings still shown); same as MMAL_PROGRESS=0"),
):
    """Train the round's model on the labeled items; checkpoint per round."""
    if quiet:
        os.environ["MMAL_PROGRESS"] = "0"
    from mmal.learners import LEARNERS
    from mmal.loop.workspace_round import train_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.schema import check_value

    positive(epochs, "--epochs")
    given = {"--learner": learner, "--fusion": fusion, "--heads": heads, "--head": head, "--seed": seed}
    given = {k: v for k, v in given.items() if v is not None}
    for flag, value in given.items():
        section, key = REMEMBERED_TRAIN_FLAGS[flag]
        check_value(section, key, value, where=flag)
    ws = Workspace(directory)  # validates mmal.toml, state.sqlite and items.parquet first
    if ws.n_classes == 0 and not ws.current_labels():
        raise ConfigError(f"{ws.dir}: no labeled items and no classes yet; import labels with `mmal label {ws.dir} FILE` first")
    name = ws.task.check_learner(learner or ws.config.get("model", {}).get("learner"))
    for flag, key in (("--fusion", "fusion"), ("--heads", "heads"), ("--head", "head")):
        if flag in given and key not in LEARNERS[name].settings():
            raise ConfigError(f"{flag} does not apply to the '{name}' learner (it reads: "
                              f"{', '.join(sorted(LEARNERS[name].settings())) or 'no [model] settings'})")
    for flag, key, value in (("--fusion", "fusion", fusion), ("--heads", "heads", heads), ("--head", "head", head)):
        if value is not None:  # the learner's own config checks the value; the error names the flag
            try:
                built, _ = LEARNERS[name].from_settings(n_classes=max(2, ws.n_classes), model={key: value})
                built.check_settings(ws.modalities)
            except ConfigError as e:
                raise ConfigError(f"{flag} {value!r}: {e}") from None
    if epochs is not None and LEARNERS[name].train_defaults is None:
        raise ConfigError(f"--epochs does not apply to the '{name}' learner (it is not trained by the torch loop)")
    if pretrain is not None and LEARNERS[name].pretraining != "hcmrm":
        raise ConfigError(f"--pretrain applies to learners that start from a stored pre-training (hcmrm), not '{name}'")
    note(f"train: {ws.dir}: fitting the round's {name} model")
    out = train_workspace(directory, learner=name, model={"fusion": fusion, "heads": heads, "head": head},
                          train=None if epochs is None else {"epochs": epochs}, seed=seed,
                          finetune_towers=finetune_towers, pretrain=pretrain or "default", progress=progress_enabled())
    for w in out.get("warnings", []) or []:
        print(f"mmal: warning: {w}", file=sys.stderr)
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
    """Test-split metrics of the round's scored pool, in the task's terms; writes rounds/<n>/metrics.json."""
    from mmal.cli._common import check_round_pool
    from mmal.loop.workspace_round import evaluate_workspace
    from mmal.workspace import Workspace

    check_round_pool(Workspace(directory))
    echo_json(evaluate_workspace(directory), indent=1)


@app.command()
def pretrain(
    directory: Path = typer.Argument(...),
    name: str = typer.Option("default", "--name", help="stored under DIR/pretrain/NAME"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    dim: Optional[int] = typer.Option(None, "--dim"),
    prototypes: Optional[bool] = typer.Option(None, "--prototypes/--no-prototypes", help="MMSSL: uni-modal prototype loss (METHODS F; default on)"),
    n_prototypes: Optional[int] = typer.Option(None, "--n-prototypes", help="MMSSL: prototypes per modality"),
    include_test: Optional[bool] = typer.Option(None, "--include-test", help="MMSSL: also train on the test split"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="replace an existing pre-training of this name"),
    objectives: Optional[str] = typer.Option(None, "--objectives", help="HCMRM: subset of itc,itm,mlm,pqvm (default all four)"),
    arch: Optional[str] = typer.Option(None, "--arch", help="HCMRM: dual (default) | single | text"),
):
    """The task's pre-training on the workspace's items: MMSSL (002 ch. 4) or ITC/ITM/MLM/PQVM (003)."""
    from mmal.loop.pretrain import PRETRAINERS, pretrain_options
    from mmal.workspace import Workspace

    for flag, v in (("--epochs", epochs), ("--dim", dim), ("--n-prototypes", n_prototypes)):
        positive(v, flag)
    kind = Workspace(directory).task.pretraining
    fn = PRETRAINERS[kind]
    given = {"epochs": epochs, "dim": dim, "prototypes": prototypes, "n_prototypes": n_prototypes,
             "include_test": include_test, "objectives": objectives, "arch": arch}
    given = {k: v for k, v in given.items() if v is not None}
    ok = pretrain_options(kind)
    bad = sorted(k for k in given if k not in ok)
    if bad:
        flags = ", ".join("--" + b.replace("_", "-") for b in bad)
        raise ConfigError(f"{flags} {'does' if len(bad) == 1 else 'do'} not apply to this workspace's pre-training ({kind})")
    meta = fn(directory, name=name, seed=seed, force=force, **given)
    keys = ("name", "n_items", "n_train", "n_videos", "objectives", "arch", "modalities", "metrics", "history", "seconds")
    echo_json({k: meta[k] for k in keys if k in meta}, indent=1)
