"""A Label Studio ML backend over an mmal workspace: the request -> response logic, no HTTP.

Label Studio (1.x; checked against 1.23's ``label_studio/ml/api_connector.py``,
``ml/models.py`` and ``webhooks/models.py``, and its guide "Write your own ML backend")
calls an ML backend at ``<url>/health`` (GET), ``/setup``, ``/predict``, ``/webhook`` and
``/job_status`` (POST, JSON). :class:`LabelStudioBackend` answers each with
``(HTTP status, JSON object)``; :mod:`mmal.serve.ml_backend_app` is the HTTP server around it.

- ``/predict`` ``{"tasks": [{"id", "data": {"item_id", ...}}, ...]}`` ->
  ``{"results": [one prediction per task, in order], "model_version"}``. Each prediction is
  what ``mmal export`` puts in a task (:func:`mmal.workspace.annotate.scored_predictions`):
  the latest scored pool's most probable class, ``model_version`` ``mmal-round-<n>``, and a
  ``score`` for Label Studio's "Prediction score" ordering: ``rank / batch size`` in [0, 1)
  for an item of the latest batch, :data:`NOT_IN_BATCH_SCORE` for any other item, so that
  ascending order shows mmal's current batch first, in mmal's order. It only reads what
  ``mmal score`` and ``mmal select`` wrote; it never trains.
- ``/webhook``: ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (and the bulk
  ``ANNOTATIONS_CREATED``) store the annotation's choice with the workspace's transactional
  label import (:func:`mmal.workspace.annotate.import_rows`, the checks of ``mmal label``)
  under the source ``label-studio project P annotation A``; ``ANNOTATIONS_DELETED`` (Label
  Studio's name; ``ANNOTATION_DELETED`` is accepted too) removes the labels that annotation
  stored (:func:`mmal.workspace.state.remove_labels`; the label history keeps them);
  ``START_TRAINING`` (what Label Studio 1.23's *Start Training* sends) starts train + score +
  select in a background thread and answers at once. One job at a time: a second
  ``START_TRAINING`` while one runs is refused with 409 and the running job. Any other
  action is acknowledged and ignored.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

from mmal.data import labelstudio as ls
from mmal.errors import ConfigError, LabelImportError, MmalError
from mmal.workspace import annotate, state
from mmal.workspace.lock import workspace_lock
from mmal.workspace.workspace import Workspace

#: the ``score`` of an item that is not in the latest batch: after every batch item (< 1)
NOT_IN_BATCH_SCORE = 1.0
#: how long a webhook waits for the workspace lock (a ``select`` holds it for seconds)
LOCK_WAIT_S = 30.0
LABEL_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
DELETE_ACTIONS = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED")


class RequestError(MmalError):
    """A request the backend refuses: ``status`` (4xx), a one-line message, and ``extra`` keys
    for the JSON body beside ``error``."""

    def __init__(self, status: int, message: str, extra: dict | None = None):
        self.status, self.extra = int(status), dict(extra or {})
        super().__init__(message)


def _obj(value, field: str) -> dict:
    if not isinstance(value, dict):
        got = "null" if value is None else type(value).__name__
        raise RequestError(400, f"field '{field}': expected a JSON object, got {got}")
    return value


def _ident(value, field: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise RequestError(400, f"field '{field}': expected an id (an integer or a string), got {value!r}"[:200])
    return value


def annotation_source(project_id, annotation_id) -> str:
    """The label ``source`` of the labels one Label Studio annotation stored (and a deletion removes)."""
    return f"label-studio project {project_id} annotation {annotation_id}"


def run_round(directory, *, learner: str | None, strategy: str, budget: int, on_stage=None) -> dict:
    """One active-learning round as ``mmal train``, ``mmal score`` and ``mmal select`` run it:
    train on every label, score the pool, select the next batch (with its exports)."""
    from mmal.loop.workspace_round import score_workspace, select_workspace, train_workspace

    stage = on_stage or (lambda name: None)
    stage("train")
    trained = train_workspace(directory, learner=learner, progress=False)
    stage("score")
    score_workspace(directory, progress=False)
    stage("select")
    sel = select_workspace(directory, strategy, int(budget), lock_timeout=LOCK_WAIT_S)
    return {"round": trained["round"], "learner": trained["learner"], "n_labeled": trained["n_labeled"],
            "batch": sel["batch"], "batch_round": trained["round"] + 1, "model_version": sel["predictions"],
            "tasks_file": sel["exports"].get("labelstudio"), "warnings": list(trained["warnings"]) + list(sel["warnings"])}


class TrainingJobs:
    """Background jobs, one at a time: ``start`` runs ``fn(on_stage)`` in a thread.

    A job's status: ``{"job", "status": "started" | "finished" | "failed", "stage",
    "started_at", "finished_at", "result", "error"}`` (``error``: the one-line message)."""

    def __init__(self, fn):
        self._fn = fn
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._n = 0
        self._thread: threading.Thread | None = None

    def running(self) -> dict | None:
        with self._lock:
            return next((dict(j) for j in self._jobs.values() if j["status"] == "started"), None)

    def start(self) -> tuple[dict, bool]:
        """``(job status, True)`` for a new job, ``(the running job, False)`` when one runs."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j["status"] == "started"), None)
            if busy is not None:
                return dict(busy), False
            self._n += 1
            job = {"job": f"mmal-train-{self._n}", "status": "started", "stage": "queued", "started_at": time.time(),
                   "finished_at": None, "result": None, "error": None}
            self._jobs[job["job"]] = job
            self._thread = threading.Thread(target=self._run, args=(job,), name=job["job"], daemon=True)
            self._thread.start()
            return dict(job), True

    def _run(self, job: dict) -> None:
        def on_stage(name):
            with self._lock:
                job["stage"] = name

        try:
            result, err, status = self._fn(on_stage), None, "finished"
        except MmalError as e:
            result, err, status = None, (str(e).splitlines() or [type(e).__name__])[0], "failed"
        except Exception as e:  # noqa: BLE001 - a job's crash is reported in its status, not lost in a thread
            result, err, status = None, f"{type(e).__name__}: {e}".splitlines()[0], "failed"
        with self._lock:
            job.update(result=result, error=err, status=status, finished_at=time.time())

    def get(self, job_id) -> dict | None:
        with self._lock:
            j = self._jobs.get(str(job_id))
            return None if j is None else dict(j)

    def latest(self) -> dict | None:
        with self._lock:
            return dict(self._jobs[f"mmal-train-{self._n}"]) if self._n else None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the current job's thread (tests, shutdown)."""
        t = self._thread
        if t is not None:
            t.join(timeout)


class LabelStudioBackend:
    """The ML backend of the workspace at ``directory``.

    ``learner``, ``strategy``, ``budget``: what ``START_TRAINING`` trains and selects with
    (defaults: the workspace's ``[model] learner``, ``[select] strategy`` and ``budget``).
    ``job``: the training job's function of ``on_stage`` (default :func:`run_round`; tests
    pass a stand-in)."""

    def __init__(self, directory, *, learner: str | None = None, strategy: str | None = None,
                 budget: int | None = None, job=None):
        self.ws = Workspace(directory)
        self.strategy = strategy or self.ws.setting("select", "strategy")
        self.budget = int(budget if budget is not None else self.ws.setting("select", "budget"))
        self.learner = None if learner is None else self.ws.task.check_learner(learner)
        from mmal.select.spec import parse_spec

        try:
            parse_spec(self.strategy)
        except MmalError as e:
            raise type(e)(f"--strategy {self.strategy!r}: {e}") from None
        if self.budget < 1:
            raise ConfigError(f"--budget must be >= 1, got {self.budget}")
        if job is None:
            def job(on_stage):
                return run_round(self.ws.dir, learner=self.learner, strategy=self.strategy, budget=self.budget,
                                 on_stage=on_stage)
        self.jobs = TrainingJobs(job)

    # ---- read-only routes ----------------------------------------------------------------
    def model_version(self) -> str | None:
        rnd = annotate.latest_scored_round(self.ws)
        return None if rnd is None else annotate.model_version(rnd)

    def status(self) -> dict:
        """What ``/health`` and ``/status`` report: the model version and the latest training job."""
        return {"status": "UP", "model_class": "mmal", "workspace": str(self.ws.dir), "model_version": self.model_version(),
                "strategy": self.strategy, "budget": self.budget, "job": self.jobs.latest()}

    def health(self) -> tuple[int, dict]:
        return 200, self.status()

    def versions(self) -> tuple[int, dict]:
        """``/versions``: the model version of every scored round."""
        top = annotate.latest_scored_round(self.ws)
        have = [] if top is None else [r for r in range(top + 1) if (self.ws.round_dir(r) / "pool" / "ids.parquet").exists()]
        return 200, {"versions": [annotate.model_version(r) for r in have], "model_version": self.model_version()}

    def setup(self, body) -> tuple[int, dict]:
        """``/setup`` ``{"project", "schema", ...}``: the model version, after checking that the
        project's labeling config has mmal's single-choice ``label`` control over the
        workspace's classes (else 400 naming the difference)."""
        body = _obj(body, "body")
        schema = body.get("schema")
        if schema not in (None, ""):
            if not isinstance(schema, str):
                raise RequestError(400, f"field 'schema': expected the labeling config (a string), got {type(schema).__name__}")
            self._check_schema(schema)
        return 200, {"model_version": self.model_version()}

    def _check_schema(self, schema: str) -> None:
        try:
            root = ET.fromstring(schema)
        except ET.ParseError as e:
            raise RequestError(400, f"field 'schema': the labeling config is not XML ({e})") from None
        control = next((el for el in root.iter("Choices") if el.get("name") == ls.CONTROL_NAME), None)
        if control is None:
            raise RequestError(400, f"field 'schema': the labeling config has no <Choices name=\"{ls.CONTROL_NAME}\">; "
                                    f"use mmal's exports/batch-NNNN.labelstudio-config.xml")
        have = [c.get("value") for c in control.iter("Choice")]
        want = annotate.class_choices(self.ws)
        if sorted(map(str, have)) != sorted(want):
            missing = [c for c in want if c not in have]
            extra = [c for c in have if c not in want]
            raise RequestError(400, f"field 'schema': the choices of '{ls.CONTROL_NAME}' are not the workspace's classes "
                                    f"(missing {missing[:5]}, unknown {extra[:5]})")

    def predict(self, body) -> tuple[int, dict]:
        """``/predict``: one prediction per task (see the module docstring); 404 when no task names
        a workspace item, 409 when nothing is scored yet."""
        body = _obj(body, "body")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(400, "field 'tasks': expected a non-empty list of Label Studio tasks")
        item_ids = []
        for k, t in enumerate(tasks):
            data = _obj(t, f"tasks[{k}]").get("data")
            data = _obj(data, f"tasks[{k}].data")
            v = data.get("item_id")
            item_ids.append(None if isinstance(v, bool) or not isinstance(v, (int, str)) else str(v))
        b = state.latest_batch(self.ws)
        ranks = {} if b is None else {r[0]: r[1] for r in state.batch_items(self.ws, b.batch_id)}
        n = max(1, len(ranks))
        scores = [ranks[i] / n if i in ranks else NOT_IN_BATCH_SCORE for i in item_ids]
        preds, version = annotate.scored_predictions(self.ws, [(i, s) for i, s in zip(item_ids, scores)])
        if version is None:
            raise RequestError(409, f"{self.ws.dir}: no scored pool yet, so no predictions; run `mmal train` and "
                                    "`mmal score` (or Start Training in Label Studio) first")
        if all(p is None for p in preds):
            raise RequestError(404, f"tasks[0] (Label Studio task {tasks[0].get('id')!r}): data.item_id "
                                    f"{item_ids[0]!r} is not an item of the workspace's scored pool"
                                    + (f" (nor are the other {len(tasks) - 1} tasks)" if len(tasks) > 1 else ""))
        results = [p if p is not None else {"result": [], "score": None, "model_version": version} for p in preds]
        return 200, {"results": results, "model_version": version}

    # ---- webhook -------------------------------------------------------------------------
    def webhook(self, body) -> tuple[int, dict]:
        body = _obj(body, "body")
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise RequestError(400, f"field 'action': expected a Label Studio event name, got {action!r}"[:200])
        if action == "START_TRAINING":
            return self.start_training()
        if action in LABEL_ACTIONS:
            return 200, self._store(action, body)
        if action in DELETE_ACTIONS:
            return 200, self._delete(action, body)
        return 200, {"status": "ignored", "action": action}

    def _project_id(self, body):
        p = body.get("project")
        if isinstance(p, dict):
            p = p.get("id")
        return "?" if p is None else _ident(p, "project.id")

    def _store(self, action: str, body: dict) -> dict:
        pid = self._project_id(body)
        anns, tasks = body.get("annotation"), body.get("task")
        if action == "ANNOTATIONS_CREATED" and isinstance(anns, list) and isinstance(tasks, list):
            if len(anns) != len(tasks):
                raise RequestError(400, f"fields 'annotation' and 'task': {len(anns)} annotations but {len(tasks)} tasks")
            pairs = [(_obj(a, f"annotation[{k}]"), _obj(t, f"task[{k}]")) for k, (a, t) in enumerate(zip(anns, tasks))]
        else:
            pairs = [(_obj(anns, "annotation"), _obj(tasks, "task"))]
        out = {"status": "stored", "action": action, "stored": 0, "unchanged": 0, "removed": 0, "items": []}
        with workspace_lock(self.ws.dir, f"label-studio webhook {action}", timeout=LOCK_WAIT_S):
            for ann, task in pairs:
                aid = _ident(ann.get("id"), "annotation.id")
                where = f"webhook {action}: annotation {aid} of task {task.get('id')!r}"
                source = annotation_source(pid, aid)
                try:
                    row = ls.from_task({"data": task.get("data"), "annotations": [ann]}, where, 1)
                    if row["label"] is None:  # skipped, cancelled, or the choice was cleared: drop its label
                        out["removed"] += len(state.remove_labels(self.ws, source, by=f"{source} (cleared)"))
                        continue
                    res = annotate.import_rows(self.ws, [(1, row)], where=where, source=source)
                except ls.RowError as e:
                    raise RequestError(400, f"{where}: {e.detail}") from None
                except LabelImportError as e:
                    raise RequestError(400, str(e)) from None
                out["stored"] += res["inserted"] + res["updated"]
                out["unchanged"] += res["unchanged"]
                out["items"].append(str(row["id"]))
                out.setdefault("warnings", []).extend(res["warnings"])
        return out

    def _delete(self, action: str, body: dict) -> dict:
        pid = self._project_id(body)
        anns = body.get("annotations", body.get("annotation"))
        anns = anns if isinstance(anns, list) else [anns]
        ids = [_ident(_obj(a, f"annotations[{k}]").get("id"), f"annotations[{k}].id") for k, a in enumerate(anns)]
        removed = []
        with workspace_lock(self.ws.dir, f"label-studio webhook {action}", timeout=LOCK_WAIT_S):
            for aid in ids:
                src = annotation_source(pid, aid)
                removed += state.remove_labels(self.ws, src, by=f"{src} (deleted)")
        return {"status": "removed", "action": action, "removed": len(removed), "items": [r["id"] for r in removed]}

    # ---- training ------------------------------------------------------------------------
    def start_training(self) -> tuple[int, dict]:
        job, new = self.jobs.start()
        if not new:
            raise RequestError(409, f"a training job is already running ({job['job']}, stage {job['stage']}); "
                                    "wait for it (GET /status) and start again", {"job": job})
        return 200, {"job": job["job"], "status": "started"}

    def job_status(self, body) -> tuple[int, dict]:
        """``/job_status`` ``{"job"}``: ``{"job_status": "started" | "finished" | "failed", ...}`` (Label
        Studio's train-job poll); 410 for a job this process does not know (e.g. before a restart)."""
        body = _obj(body, "body")
        job = self.jobs.get(_ident(body.get("job"), "job"))
        if job is None:
            raise RequestError(410, f"job {body.get('job')!r} is not known to this backend (it restarted, or never ran it)")
        return 200, {"job_status": job["status"], **job}
