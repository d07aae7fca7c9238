"""Label Studio formats, both ways (Label Studio 1.x; round trip tested against 1.23).

Out: :func:`labeling_config` (the XML labeling config for the modalities present) and
:func:`task` (one task per batch item; its ``data`` carries *every* variable the config
uses, ``""`` where the item lacks that modality, because Label Studio rejects a task
that lacks a variable of the config).

In: Label Studio's three export formats, each turned into plain rows
``{"id", "label", "round", "annotator"}``:

- ``JSON``: a list of tasks ``{"id", "data": {...}, "annotations": [{"result": [...],
  "was_cancelled", "completed_by", ...}], ...}``; a choice result is
  ``{"type": "choices", "from_name": "label", "value": {"choices": ["cat"]}}``;
- ``JSON_MIN``: a list of flat objects, one per annotated task: the task data keys,
  plus ``id`` (Label Studio's task id), ``annotator``, ``annotation_id``, ``created_at``,
  ``updated_at``, ``lead_time`` and one key per control tag (``label``) whose value is
  the choice (a string) or ``{"choices": [...]}`` when several are chosen;
- ``CSV``: the same columns as JSON_MIN.

In every format the item is identified by ``item_id`` from the task data that mmal put
there, never by Label Studio's own task ``id``. The annotator is a string, or Label Studio's
integer user id (stored as its decimal string; ``completed_by`` may also be the user object,
whose ``email``, else ``id``, is taken); anything else is refused, never stored as its
string form.

A bad row raises :class:`RowError` (a :class:`~mmal.errors.LabelImportError` that knows its
row), so that an importer can report every bad row of a file at once.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import quoteattr

from mmal.errors import LabelImportError

#: Label Studio object tag per modality column, in the order they appear in the config.
OBJECT_TAGS = {"image": "Image", "video": "Video", "audio": "Audio", "text": "Text", "query": "Text"}
MEDIA = ("image", "video", "audio")
CONTROL_NAME = "label"
#: Keys mmal puts in task data besides the modality variables.
META_KEYS = ("item_id", "round", "batch", "strategy", "reason")


def labeling_config(modalities, class_names, *, ordered: bool = False) -> str:
    """The XML labeling config: one object tag per modality present, one single-choice control.

    ``class_names`` are the choice values; each is XML-escaped (an attribute value), so a
    name such as ``Tom & Jerry`` or ``"/><Script>`` stays a plain value. The value is what
    Label Studio exports and what an import maps back to its index (the class id or level).

    ``ordered`` (graded levels, e.g. the relevance task's 0 bad … 3 excellent of 003): a
    ``<Header>`` above the choices names each level with its number
    (:func:`level_legend`), so the annotator sees the grade behind each name; the choice
    values stay the names, so exports, imports and pre-annotations are unchanged.
    """
    mods = [m for m in OBJECT_TAGS if m in set(modalities)]
    if not mods:
        raise ValueError("labeling_config needs at least one modality")
    lines = ["<View>"]
    for m in mods:
        lines.append(f"  <{OBJECT_TAGS[m]} name={quoteattr(m)} value={quoteattr('$' + m)}/>")
    to = control_target(mods)
    if ordered:
        lines.append(f"  <Header value={quoteattr(level_legend(class_names))}/>")
    lines.append(f"  <Choices name={quoteattr(CONTROL_NAME)} toName={quoteattr(to)} choice=\"single\" showInline=\"true\">")
    for c in class_names:
        lines.append(f"    <Choice value={quoteattr(str(c))}/>")
    lines.append("  </Choices>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def level_legend(level_names) -> str:
    """``"Level, lowest to highest: 0 bad · 1 less · 2 good · 3 excellent"``: each level's
    number (its integer label) with its name, in order."""
    return "Level, lowest to highest: " + " · ".join(f"{k} {n}" for k, n in enumerate(level_names))


def config_variables(modalities) -> list[str]:
    """The ``$variables`` :func:`labeling_config` uses: every task must carry each of them."""
    return [m for m in OBJECT_TAGS if m in set(modalities)]


def control_target(modalities) -> str:
    """The object tag the ``label`` control points at (``toName`` of :func:`labeling_config`)."""
    mods = config_variables(modalities)
    return "text" if "text" in mods else mods[0]


def prediction(choice: str, score: float, model_version: str, modalities) -> dict:
    """A Label Studio pre-annotation: the model's class (or level) name as the config's
    ``label`` choice. ``score`` is what Label Studio sorts by ("Prediction score")."""
    return {"model_version": str(model_version), "score": float(score),
            "result": [{"from_name": CONTROL_NAME, "to_name": control_target(modalities), "type": "choices",
                        "value": {"choices": [str(choice)]}}]}


def cluster_of(reason) -> int | None:
    """The diversity cluster a strategy recorded in an item's reason (``"cluster 3"``), else None."""
    if isinstance(reason, str) and reason.startswith("cluster "):
        rest = reason[len("cluster "):].strip()
        if rest.isdigit():
            return int(rest)
    return None


def task(row: dict, modalities, media_url, pred: dict | None = None) -> dict:
    """One Label Studio task for a batch row. ``media_url(column, path, item_id)`` gives the
    URL of a media file; an item lacking a modality gets ``""`` for that variable.

    ``pred`` (from :func:`prediction`) becomes the task's one ``predictions`` entry. A row
    whose reason names a cluster (``"cluster 3"``) gets ``data["cluster"]``."""
    data = {"item_id": row["id"], "round": row["round"], "batch": row["batch"],
            "strategy": row["strategy"], "reason": row["reason"]}
    c = cluster_of(row.get("reason"))
    if c is not None:
        data["cluster"] = c
    for m in config_variables(modalities):
        v = row.get(m)
        if m in MEDIA:
            data[m] = media_url(m, v, row["id"]) if v else ""
        else:
            data[m] = "" if v is None else str(v)
    out = {"data": data, "meta": {"mmal_batch": row["batch"], "mmal_round": row["round"]}}
    if pred is not None:
        out["predictions"] = [pred]
    return out


# ---- import ---------------------------------------------------------------------------------
class RowError(LabelImportError):
    """One bad row of a label file: ``path``, ``row`` (1-based) and ``detail`` (what is wrong)."""

    def __init__(self, path, row, detail: str):
        self.path, self.row, self.detail = path, row, detail
        super().__init__(f"{path}: row {row}: {detail}; nothing imported")


def _fail(path, i, msg):
    raise RowError(path, i, msg)


def annotator_value(value, path, i, field: str = "annotator"):
    """An annotator as stored: None, a string, or an integer user id as its decimal string; RowError otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    what = {dict: "a JSON object", list: "a JSON list", bool: "a boolean", float: "a float"}.get(type(value), type(value).__name__)
    shown = json.dumps(value) if isinstance(value, (dict, list)) else repr(value)
    _fail(path, i, f"field '{field}': expected an annotator name (a string) or a user id (an integer), got {what} "
                   f"{shown[:60]}")


def _choice(value, path, i, field):
    """The one chosen class of a control value: a string, or ``{"choices": [one]}``."""
    if isinstance(value, dict):
        if "choices" not in value:
            _fail(path, i, f"field '{field}': expected a 'choices' list, got keys {sorted(value)[:5]}")
        value = value["choices"]
        if not isinstance(value, list):
            _fail(path, i, f"field '{field}.choices': expected a list of one class, got {type(value).__name__} {value!r}")
    if isinstance(value, list):
        if len(value) != 1:
            _fail(path, i, f"field '{field}': expected exactly one choice, got {len(value)}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        _fail(path, i, f"field '{field}': expected a class name, got {type(value).__name__} {value!r}")
    return value


def from_task(t, path, i) -> dict:
    """A row from one task of a Label Studio ``JSON`` export (the last non-cancelled annotation)."""
    data = t.get("data")
    if not isinstance(data, dict):
        _fail(path, i, f"field 'data': expected an object, got {type(data).__name__}")
    anns = t.get("annotations", [])
    if anns is None:
        anns = []
    if not isinstance(anns, list):
        _fail(path, i, f"field 'annotations': expected a list, got {type(anns).__name__}")
    for k, a in enumerate(anns):
        if not isinstance(a, dict):
            _fail(path, i, f"field 'annotations[{k}]': expected an object, got {type(a).__name__}")
    anns = [a for a in anns if not a.get("was_cancelled")]
    label, annotator = None, None
    if anns:
        ann = anns[-1]
        cb = ann.get("completed_by")
        field = "annotations.completed_by"
        if isinstance(cb, dict):  # Label Studio's user object
            cb, field = (cb.get("email"), f"{field}.email") if cb.get("email") else (cb.get("id"), f"{field}.id")
        annotator = annotator_value(cb, path, i, field)
        result = ann.get("result", [])
        if not isinstance(result, list):
            _fail(path, i, f"field 'annotations.result': expected a list, got {type(result).__name__}")
        for k, res in enumerate(result):
            if not isinstance(res, dict):
                _fail(path, i, f"field 'annotations.result[{k}]': expected an object, got {type(res).__name__}")
            if res.get("type") not in (None, "choices") or res.get("from_name", CONTROL_NAME) != CONTROL_NAME:
                continue
            value = res.get("value")
            if not isinstance(value, dict):
                _fail(path, i, f"field 'annotations.result[{k}].value': expected an object, got {type(value).__name__}")
            label = _choice(value, path, i, "choices")
            break
    return {"id": data.get("item_id"), "label": label, "round": data.get("round"), "annotator": annotator,
            "_id_field": "data.item_id"}


def from_min(t: dict, path, i) -> dict:
    """A row from one object of a ``JSON_MIN`` export (or one CSV export row)."""
    raw = t.get(CONTROL_NAME)
    if isinstance(raw, str) and raw.strip().startswith("{"):  # CSV cell holding {"choices": [...]}
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            _fail(path, i, f"field '{CONTROL_NAME}': invalid JSON {raw[:40]!r}")
    label = None if raw in (None, "") else _choice(raw, path, i, CONTROL_NAME)
    return {"id": t.get("item_id"), "label": label, "round": t.get("round"),
            "annotator": annotator_value(t.get("annotator"), path, i), "_id_field": "item_id"}


def is_task(obj) -> bool:
    return isinstance(obj, dict) and "data" in obj


def is_min(obj) -> bool:
    return isinstance(obj, dict) and "data" not in obj and "item_id" in obj
