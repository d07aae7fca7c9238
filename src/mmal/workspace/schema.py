"""The one schema of ``mmal.toml``: section -> key -> type, range, default.

Every key a reader of ``mmal.toml`` honours is listed in :data:`SCHEMA`; the file is
checked against it when a :class:`~mmal.workspace.Workspace` is opened, so a typo, a key
that nothing reads, a wrong type or an out-of-range value is one line naming the file, the
section and the key (exit 2) before any command does anything.

Defaults are stated once. ``[model]`` is built from the learners
(:meth:`mmal.learners.base.Learner.settings`: their parameters and the fields of their
config dataclasses) and ``[train]`` from :class:`~mmal.train.config.TrainConfig`; the
values those keys take are checked by the learner's own config when the workspace is
opened (:func:`validate_config`). The other sections are listed here with their defaults,
which the code reads through :func:`default` (``Workspace.setting``). :func:`effective_config`
is what ``mmal config DIR`` prints.

Sections whose keys are open-ended (``[modalities]``, ``[encoders]``) list their allowed
keys too: the model-level modalities ``text``, ``image``, ``audio``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmal.errors import ConfigError

from mmal.data.items import MAX_CLASSES

MODALITIES = ("text", "image", "audio")


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
                "float-list": "a list of positive numbers", "int-table": "a table of positive integers",
                "table": "a table"}[self.kind]
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
        "type": _s(None, ("binary", "multiclass", "relevance", "classify"), required=True,
                   doc="binary | multiclass | relevance (classify: an older name, read as binary or multiclass)"),
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
    "model": None,  # built below from the learners (their parameters and config dataclasses)
    "train": None,  # built below from TrainConfig and the round's own keys
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
#: keys of ``[train]`` read by the workspace round itself (not TrainConfig fields)
ROUND_TRAIN = {
    "val_fraction": _f(None, 0.0, 1.0, hi_open=True, doc="labeled share held out for early stopping (default per "
                                                        "learner: 0.2 for fusion, else 0)"),
    "finetune_towers": _b(False, doc="train the fusion learner and the towers end to end (slow on CPU)"),
    "tower_lr": _f(1e-5, 0.0, doc="learning rate of the towers when fine-tuned end to end (> 0)"),
    "tower_mode": _s("eval", ("eval", "train"), doc="towers' mode while fine-tuned (eval: BatchNorm frozen)"),
}


def _kind(annotation, default) -> str | None:
    """Schema kind of a dataclass field / parameter from its annotation (a string) and default."""
    a = str(annotation or "").replace(" ", "")
    if a.startswith("bool") or isinstance(default, bool):
        return "bool"
    if a.startswith("int|None") or a == "int" or (isinstance(default, int) and not a):
        return "int"
    if a.startswith("float") or isinstance(default, float):
        return "float"
    if a.startswith("str") or isinstance(default, str):
        return "str"
    if a.startswith("dict[str,int]") or (isinstance(default, dict) and all(isinstance(v, int) for v in default.values())):
        return "int-table"
    if a.startswith("dict"):
        return "table"
    if isinstance(default, (tuple, list)) and default and all(isinstance(x, (int, float)) for x in default):
        return "float-list"
    if a.startswith("tuple") or isinstance(default, (tuple, list)) or a.startswith("list") or default is None:
        return "str-list" if "str" in a or isinstance(default, (tuple, list)) else None
    return None


def _annotations(cls) -> dict:
    import dataclasses
    import inspect

    out = {}
    for c in reversed(cls.__mro__):
        out.update(getattr(c, "__annotations__", {}) or {})
    if dataclasses.is_dataclass(cls):
        return out
    return {n: p.annotation for n, p in inspect.signature(cls.__init__).parameters.items()}


def _model_section() -> dict[str, Key]:
    """``[model]``: ``learner`` and the union of every learner's settings, typed from their annotations."""
    from mmal.learners import LEARNERS

    keys: dict[str, Key] = {"learner": _s(None, tuple(LEARNERS), doc="which learner `mmal train` fits "
                                                                      "(default: the task's)")}
    for cls in LEARNERS.values():
        ann = {**_annotations(cls), **(_annotations(cls.model_config) if cls.model_config else {})}
        for name, default in cls.settings().items():
            kind = _kind(ann.get(name), default)
            if kind is None or name in keys:
                continue
            keys[name] = Key(kind, default, doc=f"read by the {', '.join(n for n, c in LEARNERS.items() if name in c.settings())} "
                                                 "learner(s); checked by the learner's config")
    return keys


def _train_section() -> dict[str, Key]:
    """``[train]``: every :class:`TrainConfig` field with its default, plus :data:`ROUND_TRAIN`."""
    import dataclasses

    from mmal.train.config import TrainConfig

    ann = _annotations(TrainConfig)
    keys = {}
    for f in dataclasses.fields(TrainConfig):
        kind = _kind(ann.get(f.name), f.default)
        if kind is not None:
            keys[f.name] = Key(kind, f.default, doc="TrainConfig field (learners override some defaults)")
    keys["seed"] = _i(0, 0, 2**63 - 1, doc="training seed")
    return {**keys, **ROUND_TRAIN}


class _LazySection(Mapping):
    """A schema section built on first use: ``[model]`` reads every learner's settings, which
    imports torch; a command that never touches ``[model]`` (``mmal label``, ``info``, ...)
    should not pay that (about 1.5 s per process)."""

    def __init__(self, build):
        self._build, self._keys = build, None

    def _section(self) -> dict:
        if self._keys is None:
            self._keys = self._build()
        return self._keys

    def __getitem__(self, k):
        return self._section()[k]

    def __iter__(self):
        return iter(self._section())

    def __len__(self):
        return len(self._section())


SCHEMA["model"] = _LazySection(_model_section)
SCHEMA["train"] = _train_section()

#: keys whose value must be strictly greater than ``lo``
_STRICT_LO = {("train", "tower_lr")}
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
    if key.kind == "table":
        return isinstance(v, dict)
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
    if section == "encoders":
        from mmal.encoders import KNOWN_SPECS

        if v not in KNOWN_SPECS:
            return f"{v!r} is not a known encoder (known: {', '.join(KNOWN_SPECS)})"
        if v.split(":", 1)[0] != name:
            return f"{v!r} is not a {name} encoder (known: {', '.join(k for k in KNOWN_SPECS if k.startswith(name + ':'))})"
    if section == "export" and name == "media_url":
        try:
            v.format(path="p", id="i", column="c")
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            return f"{v!r} is not a URL template: {type(e).__name__} {e} (fields: {{path}}, {{id}}, {{column}}; write {{{{ }}}} for a brace)"
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


FIX = "fix the value (or restore mmal.toml from a backup)"


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
    check_settings(cfg, path)
    names = cfg["task"].get("label_names")
    if names is not None and len(names) != cfg["task"]["n_classes"]:
        raise ConfigError(f"{path}: [task] label_names has {len(names)} names but n_classes = "
                          f"{cfg['task']['n_classes']}; {FIX}")


def default(section: str, name: str):
    """The default of ``[section] name`` (what the code uses when ``mmal.toml`` does not set it)."""
    return SCHEMA[section][name].default


def check_settings(cfg: dict, path) -> None:
    """ConfigError (one line naming the file) when ``[model]`` / ``[train]`` values do not fit the
    workspace's learner: built exactly as ``mmal train`` builds it, so its own config checks run."""
    model, train = dict(cfg.get("model", {})), dict(cfg.get("train", {}))
    if not model and not train:
        return
    from mmal.learners import LEARNERS
    from mmal.tasks import task_of

    try:
        task = task_of(cfg)
        name = task.check_learner(model.get("learner"))
        train = {k: v for k, v in train.items() if k not in ROUND_TRAIN and k != "seed"}
        learner = LEARNERS[name]
        if learner.train_defaults is None:
            train = {}
        built, _ = learner.from_settings(n_classes=max(2, int(cfg["task"].get("n_classes", 2))), model=model, train=train)
        built.check_settings([m for m, on in cfg.get("modalities", {}).items() if on] or ["text"])
    except ConfigError as e:
        raise ConfigError(f"{path}: [model] / [train]: {e}; {FIX}") from None


def effective_config(cfg: dict) -> dict:
    """Every setting a workspace runs with: its ``mmal.toml`` over the defaults (``mmal config DIR``).

    ``[model]`` lists the settings of the workspace's learner only (with ``learner``), and
    ``ignored`` the ``[model]`` keys other learners read; ``[train]`` is TrainConfig's
    defaults under the learner's own (``train_defaults``) under ``mmal.toml``.
    """
    import dataclasses

    from mmal.learners import LEARNERS
    from mmal.tasks import task_of
    from mmal.train.config import TrainConfig

    task = task_of(cfg)
    model = dict(cfg.get("model", {}))
    name = task.check_learner(model.get("learner"))
    cls = LEARNERS[name]
    out: dict = {"task": {**{k: key.default for k, key in SCHEMA["task"].items() if key.default is not None},
                          **cfg.get("task", {}), "type": task.name, "headline": task.headline}}
    for section in ("modalities", "encoders", "encode", "select", "export"):
        out[section] = {**{k: key.default for k, key in SCHEMA[section].items() if key.default is not None},
                        **cfg.get(section, {})}
    settings = cls.settings()
    out["model"] = {"learner": name, **{k: v for k, v in settings.items()},
                    **{k: v for k, v in model.items() if k in settings}}
    ignored = sorted(k for k in model if k not in settings and k != "learner")
    if ignored:
        out["model"]["ignored"] = ignored
    if cls.train_defaults is not None:
        base = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        out["train"] = {**base, **cls.train_defaults, **{k: v for k, v in cfg.get("train", {}).items()}}
    else:
        out["train"] = {k: v for k, v in cfg.get("train", {}).items() if k == "seed"} or {"seed": 0}
    return out
