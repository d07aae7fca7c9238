"""The one schema of ``mmal.toml``: section -> key -> type, range, default.

Every key a reader of ``mmal.toml`` honours is listed in :data:`SCHEMA`; the file is
checked against it when a :class:`~mmal.workspace.Workspace` is opened, so a typo, a key
that nothing reads, a wrong type or an out-of-range value is one line naming the file, the
section and the key (exit 2) before any command does anything.

To add a key: add one :class:`Key` to its section below (and read it where it is used).
Sections whose keys are open-ended (``[modalities]``, ``[encoders]``) list their allowed
keys too: the model-level modalities ``text``, ``image``, ``audio``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmal.errors import ConfigError

#: Largest class count a workspace accepts (bounds memory: the heads are [d, C]).
MAX_CLASSES = 10_000

MODALITIES = ("text", "image", "audio")
LEARNERS = ("linear", "late-fusion", "fusion")


@dataclass(frozen=True)
class Key:
    """One ``mmal.toml`` key.

    kind : "int" | "float" | "str" | "bool" | "str-list" | "float-list" (positive numbers) |
        "int-table" (name -> positive int)
    default : value used when the key is absent (``None`` = no default / optional).
    lo, hi : inclusive numeric bounds (``hi_open``: ``value < hi``).
    choices : allowed values for strings.
    required : the key must be present.
    doc : one line shown by docs/reliability.md.
    """

    kind: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False
    choices: tuple | None = None
    required: bool = False
    doc: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "str-list": "a list of strings",
                "float-list": "a list of positive numbers", "int-table": "a table of positive integers"}[self.kind]
        if self.lo is not None and self.hi is not None:
            what += f" in [{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            what += f" >= {self.lo}"
        elif self.hi is not None:
            what += f" {'<' if self.hi_open else '<='} {self.hi}"
        return what


def _i(default=None, lo=None, hi=None, **kw) -> Key:
    return Key("int", default, lo, hi, **kw)


def _f(default=None, lo=None, hi=None, **kw) -> Key:
    return Key("float", default, lo, hi, **kw)


def _s(default=None, choices=None, **kw) -> Key:
    return Key("str", default, choices=choices, **kw)


def _b(default=None, **kw) -> Key:
    return Key("bool", default, **kw)


#: section -> key -> Key. Required sections: ``task``.
SCHEMA: dict[str, dict[str, Key]] = {
    "task": {
        "type": _s("classify", ("classify", "relevance"), required=True, doc="classify | relevance"),
        "n_classes": _i(0, 0, MAX_CLASSES, required=True, doc="number of classes (0 until labels exist)"),
        "items_source": _s(doc="the items file the workspace was created from"),
        "label_names": Key("str-list", doc="class names, index = integer label"),
    },
    "modalities": {m: _b(True, doc=f"use the {m} modality") for m in MODALITIES},
    "encoders": {m: _s(doc=f"encoder spec for {m}, e.g. {m}:...") for m in MODALITIES},
    "encode": {
        "n_frames": _i(3, 1, 256, doc="video frames per clip"),
        "batch_size": _i(16, 1, 65536, doc="items per encoder call"),
        "whisper_pad_to_30s": _b(False, doc="pad audio to Whisper's 30 s window"),
    },
    # [model]: ``learner`` plus the union of the learners' own settings (mmal.learners; which
    # learner accepts which key is checked by the learner itself when `mmal train` builds it).
    # tests/test_bad_inputs.py::test_schema_model_keys_match_the_learners keeps this in sync.
    "model": {
        "learner": _s("late-fusion", LEARNERS, doc="which learner `mmal train` fits"),
        # shared by late-fusion and fusion (heads also by linear)
        "fusion": _s("avgpool", ("none", "avgpool", "vlmae"), doc="how audio enters the fused head (late-fusion "
                                                                   "default avgpool, fusion default vlmae)"),
        "heads": _s("fused", ("fused", "fused+unimodal"), doc="unimodal heads (BMMAL, unimodal accuracy)"),
        "dropout": _f(None, 0.0, 1.0, hi_open=True),
        "d_attn": _i(128, 1, 8192, doc="VLMAE attention width"),
        "head_modalities": Key("str-list", doc="modalities fused by the head (audio)"),
        # late-fusion (mmal.models.late_fusion.LateFusionConfig) + label_smoothing
        "encoder": _s("identity", ("identity", "mlp", "mmssl")),
        "proj_hidden": _i(512, 1, 65536, doc="late-fusion encoder='mmssl': hidden width of the MMSSL projection heads"),
        "proj_dim": _i(128, 1, 65536, doc="late-fusion encoder='mmssl': output width of the MMSSL projection heads"),
        "init_encoders": _s(doc="late-fusion: folder of stored MMSSL heads to start the per-modality encoders from"),
        "freeze_encoders": _b(True, doc="late-fusion: keep encoders started from MMSSL heads frozen"),
        "d_hidden": _i(256, 1, 65536),
        "vlmae_query": _s("vl", ("vl", "learned")),
        "vlmae_value": _s("identity", ("identity", "projected")),
        "head_scale": _f(0.25, 0.0, None, doc="norm of the audio block relative to the others (> 0); setting it turns "
                                              "off its cross-validated choice"),
        "head_scale_grid": Key("float-list", [0.25, 0.5, 1.0], doc="late-fusion: head_scale candidates chosen from by "
                                                                    "cross-validation on the labeled items ([] = off)"),
        "cv_folds": _i(3, 2, 100, doc="late-fusion: folds of that cross-validation"),
        "init": _s("probe", ("probe", "zero"), doc="late-fusion: start the fused layer from the probe"),
        "probe_C": _f(10.0, 0.0, None, doc="late-fusion: C of the initialising probe (> 0)"),
        "audio_max_frames": _i(None, 1, 1_000_000),
        "label_smoothing": _f(0.0, 0.0, 1.0, hi_open=True),
        # fusion (mmal.models.ModelConfig)
        "d_model": _i(192, 1, 8192),
        "n_layers": _i(2, 0, 64),
        "n_heads": _i(4, 1, 256),
        "ffn_mult": _i(4, 1, 64),
        "multiway": _b(True),
        "max_tokens": Key("int-table", doc="max tokens per modality, e.g. {text = 64}"),
        "default_max_tokens": _i(160, 1, 1_000_000),
        "token_reduction": _s("pool", ("pool", "stride")),
        "audio_missing": _s("zeros", ("zeros", "learned")),
        "input_norm": _b(True),
        "mlp_hidden": _i(256, 1, 65536),
        "mlp_layers": _i(3, 1, 64),
        "unimodal_layers": _i(2, 1, 64),
        # linear (mmal.learners.linear.LinearProbe)
        "C": _f(10.0, 0.0, None, doc="inverse L2 strength (> 0)"),
        "max_iter": _i(2000, 1, 10_000_000),
        "class_weight": _s(None, ("balanced",)),
        "center": _b(False),
    },
    "train": {
        "lr": _f(1e-3, 0.0, None, doc="AdamW learning rate (> 0)"),
        "epochs": _i(30, 1, 100_000),
        "batch_size": _i(32, 1, 1_000_000),
        "weight_decay": _f(0.01, 0.0),
        "patience": _i(5, 1, 100_000),
        "val_fraction": _f(0.2, 0.0, 1.0, hi_open=True),
        "seed": _i(0, 0, 2**63 - 1),
        "monitor": _s("val_loss", ("val_loss", "val_accuracy")),
        "class_weight": _s(None, ("balanced",), doc="'balanced' or absent"),
        "grad_clip": _f(1.0, 0.0),
        "unimodal_weight": _f(None, 0.0),
        "threads": _i(None, 1, 4096),
        "device": _s("cpu", doc="'cpu', 'cuda' or 'cuda:N'"),
        "finetune_towers": _b(False),
        "tower_lr": _f(1e-5, 0.0),
        "tower_mode": _s("eval", ("eval", "train")),
    },
    "select": {
        "strategy": _s("entropy", doc="default --strategy of `mmal select`"),
        "budget": _i(50, 1, 10_000_000, doc="default --budget of `mmal select`"),
    },
    "export": {  # read by mmal.workspace.annotate (docs/labelstudio.md)
        "media_root": _s(doc="folder that exported media paths are relative to; media outside it are refused "
                             "(default: the items file's folder, outside which absolute paths are kept)"),
        "media_url": _s("/data/local-files/?d={path}", doc="media URL template of Label Studio tasks: {path} = "
                                                           "path relative to the media root (URL-quoted), {id} = item id"),
    },
}
#: keys whose value must be strictly greater than ``lo``
_STRICT_LO = {("train", "lr"), ("train", "grad_clip"), ("train", "tower_lr"), ("model", "C"), ("model", "head_scale"),
              ("model", "probe_C")}
REQUIRED_SECTIONS = ("task",)


def _type_ok(key: Key, v) -> bool:
    if key.kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if key.kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if key.kind == "str":
        return isinstance(v, str)
    if key.kind == "bool":
        return isinstance(v, bool)
    if key.kind == "str-list":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if key.kind == "float-list":
        return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                                           for x in v)
    if key.kind == "int-table":
        return isinstance(v, dict) and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v.values())
    raise AssertionError(key.kind)


def value_problem(section: str, name: str, v) -> str | None:
    """Why ``v`` is not a valid ``[section] name``, or None if it is."""
    key = SCHEMA[section][name]
    if not _type_ok(key, v):
        return f"{v!r} is not {key.describe()}"
    if key.choices and v not in key.choices:
        return f"{v!r} is not {key.describe()}"
    if key.kind in ("int", "float"):
        strict = (section, name) in _STRICT_LO
        if key.lo is not None and (v <= key.lo if strict else v < key.lo):
            return f"{v!r} is out of range: expected {'> ' + str(key.lo) if strict else key.describe()}"
        if key.hi is not None and (v >= key.hi if key.hi_open else v > key.hi):
            return f"{v!r} is out of range: expected {key.describe()}"
    if section == "train" and name == "device" and not (v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())):
        return f"{v!r} is not 'cpu', 'cuda' or 'cuda:N'"
    if key.kind == "str-list" and name == "label_names":
        if any(not x.strip() or x != x.strip() for x in v):
            return "names must be non-empty without surrounding spaces"
        if len(set(v)) != len(v):
            dup = next(x for x in v if v.count(x) > 1)
            return f"duplicate name {dup!r}"
    return None


def check_value(section: str, name: str, v, *, where: str) -> None:
    """ConfigError naming ``where`` (e.g. a CLI flag) if ``v`` is not valid for ``[section] name``."""
    problem = value_problem(section, name, v)
    if problem:
        raise ConfigError(f"{where}: {problem}")


FIX = "fix the value or restore mmal.toml from a backup (or re-run `mmal init`)"


def validate_config(cfg: dict, path: Path) -> None:
    """Raise ConfigError (one line: file, section, key, what is expected) for any problem in ``cfg``."""
    for section in REQUIRED_SECTIONS:
        if section not in cfg:
            raise ConfigError(f"{path}: missing section [{section}]; {FIX}")
    for section, body in cfg.items():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)}); remove it")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: '{section}' must be a [{section}] table, got {type(body).__name__}")
        keys = SCHEMA[section]
        for name, v in body.items():
            if name not in keys:
                raise ConfigError(f"{path}: [{section}] unknown key '{name}' (nothing reads it; known keys: "
                                  f"{', '.join(keys)}); remove it")
            problem = value_problem(section, name, v)
            if problem:
                raise ConfigError(f"{path}: [{section}] {name} = {problem}; {FIX}")
        for name, key in keys.items():
            if key.required and name not in body:
                raise ConfigError(f"{path}: [{section}] missing key '{name}' ({key.describe()}); {FIX}")
    names = cfg["task"].get("label_names")
    if names is not None and len(names) != cfg["task"]["n_classes"]:
        raise ConfigError(f"{path}: [task] label_names has {len(names)} names but n_classes = "
                          f"{cfg['task']['n_classes']}; {FIX}")
