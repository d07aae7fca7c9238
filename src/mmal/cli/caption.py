"""CLI: ``mmal caption train|eval|filter`` — the captioner of 002 ch. 5 (token re-weighting).

Thin: every command reads its options, calls :mod:`mmal.loop.captioning` and prints one
JSON object on stdout; stderr gets one progress bar per long step (feature caches, training,
decoding, scoring), none with ``--quiet`` or ``MMAL_PROGRESS=0``. Bad input raises :class:`~mmal.errors.ConfigError` naming the file
or the option, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from mmal.cli._common import app, echo_json, progress_enabled
from mmal.errors import ConfigError

_QUIET_HELP = "no progress bars on stderr (errors still shown); same as MMAL_PROGRESS=0"


def _progress(quiet: bool) -> bool:
    """Whether to draw progress bars (one per long step, on stderr): off with ``--quiet``
    or ``MMAL_PROGRESS=0``."""
    if quiet:
        os.environ["MMAL_PROGRESS"] = "0"
    return progress_enabled()

caption_app = typer.Typer(no_args_is_help=True, help="Captioner with visual-dependence token re-weighting (002 ch. 5).")
app.add_typer(caption_app, name="caption")


def _read_keep(path: Optional[Path], scenes) -> Optional[list[int]]:
    """Positions among the train scenes of the ids listed in ``path`` (one id a line)."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{path}: --keep file not found")
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    pos = {sid: k for k, sid in enumerate(scenes.ids[i] for i in scenes.index("train"))}
    bad = [i for i in ids if i not in pos]
    if bad:
        raise ConfigError(f"{path}: {len(bad)} ids are not train scenes of {scenes.dir} (first: {bad[0]!r})")
    if not ids:
        raise ConfigError(f"{path}: --keep file lists no ids")
    return sorted(pos[i] for i in ids)


@caption_app.command("train")
def train(
    data: Path = typer.Argument(..., help="a tuxpaint-scenes folder (mmal dataset tuxpaint-scenes DATA)"),
    out: Path = typer.Option(..., "--out", help="model file to write"),
    loss: str = typer.Option("mle", "--loss", help="mle | eos | w-pos | w-neg"),
    seed: int = typer.Option(0, "--seed"),
    epochs: int = typer.Option(6, "--epochs", help="training epochs (the tables use 6)"),
    tau: float = typer.Option(0.5, "--tau", help="softmax temperature of eq. 5.5"),
    start_frac: float = typer.Option(0.5, "--start-frac", help="share of training before re-weighting starts"),
    noise_step: int = typer.Option(900, "--noise-step", help="diffusion step of the noised image v*"),
    keep: Optional[Path] = typer.Option(None, "--keep", help="train only on the scene ids in this file (from `caption filter`)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=_QUIET_HELP),
):
    """Train a captioner on the train scenes with the chosen loss."""
    from mmal.loop.captioning import CaptionTrainConfig, load_scenes, save_captioner, train_captioner

    cfg = CaptionTrainConfig(loss=loss, epochs=epochs, tau=tau, start_frac=start_frac, noise_step=noise_step)
    scenes = load_scenes(data)
    model, hist = train_captioner(scenes, cfg, seed=seed, train_idx=_read_keep(keep, scenes), progress=_progress(quiet))
    save_captioner(out, model, scenes, cfg, hist)
    echo_json({"model": str(out), "loss": loss, "seed": seed, "seconds": round(hist["seconds"], 2),
               "final_train_loss": hist["epochs"][-1]["train_loss"], "reweight_start_step": hist["reweight_start_step"],
               "total_steps": hist["total_steps"]})


@caption_app.command("eval")
def evaluate(
    data: Path = typer.Argument(..., help="a tuxpaint-scenes folder"),
    model: Path = typer.Option(..., "--model", help="model file from `mmal caption train`"),
    decode: str = typer.Option("greedy", "--decode", help="greedy | vcd"),
    split: str = typer.Option("test", "--split", help="test | train"),
    vcd_noise_step: int = typer.Option(500, "--vcd-noise-step", help="noise step of v* for VCD decoding"),
    captions: bool = typer.Option(False, "--captions", help="include the generated captions in the output"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=_QUIET_HELP),
):
    """CHAIR_S, CHAIR_I, recall and length of the model's captions (exact ground truth)."""
    from mmal.loop.captioning import DECODES, evaluate_captioner, load_captioner, load_scenes

    if decode not in DECODES:
        raise ConfigError(f"--decode {decode!r}: expected one of {', '.join(DECODES)}")
    if split not in ("test", "train"):
        raise ConfigError(f"--split {split!r}: expected 'test' or 'train'")
    scenes = load_scenes(data)
    m = evaluate_captioner(load_captioner(model, scenes), scenes, split, method=decode, vcd_noise_step=vcd_noise_step,
                           progress=_progress(quiet))
    if not captions:
        m.pop("captions")
    echo_json(m)


@caption_app.command("filter")
def filter_(
    data: Path = typer.Argument(..., help="a tuxpaint-scenes folder"),
    model: Path = typer.Option(..., "--model", help="model trained on these scenes (scores sum_t d(y_t))"),
    out: Path = typer.Option(..., "--out", help="file to write the kept train scene ids to, one a line"),
    rule: str = typer.Option("highest", "--rule", help="lowest | highest | random"),
    fraction: float = typer.Option(0.1, "--fraction", help="share of train pairs removed"),
    seed: int = typer.Option(0, "--seed", help="seeds the random rule"),
    noise_step: int = typer.Option(900, "--noise-step"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=_QUIET_HELP),
):
    """Remove a share of training pairs by total visual dependence (002 §5.4.5)."""
    from mmal.loop.captioning import filter_training_pairs, load_captioner, load_scenes
    from mmal.select.visual_dependence_filter import FILTER_RULES

    if rule not in FILTER_RULES:
        raise ConfigError(f"--rule {rule!r}: expected one of {', '.join(FILTER_RULES)}")
    scenes = load_scenes(data)
    keep, scores = filter_training_pairs(load_captioner(model, scenes), scenes, rule, fraction, seed=seed,
                                         noise_step=noise_step, progress=_progress(quiet))
    tr = scenes.index("train")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(scenes.ids[tr[k]] + "\n" for k in keep))
    echo_json({"kept": int(len(keep)), "removed": int(len(tr) - len(keep)), "rule": rule, "fraction": fraction,
               "score_mean": float(scores.mean()), "out": str(out)})
