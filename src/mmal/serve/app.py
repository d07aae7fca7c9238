"""The review page as a Starlette app (served by uvicorn; see :func:`mmal.serve.serve`).

Routes (anything else is 404):

- ``GET /``: the current batch, one card per item (Jinja2 template ``review.html``);
- ``GET /batch/<batch id>``: any batch, the current one or an earlier round's, on the same page;
- ``GET /dataset``: every item of the workspace, filtered and paged by ``GET /api/items``, beside
  the embedding map of ``GET /api/map`` (template ``dataset.html``);
- ``GET /suspects``: labeled items whose out-of-sample prediction disagrees with their label,
  from ``GET /api/suspects`` (template ``suspects.html``); their relabels post to ``/api/label``;
- ``GET /static/<name>``: the pages' scripts and style (:data:`STATIC`);
- ``GET /media/<item id>/<modality>``: the ``image``, ``video`` or ``audio`` file that the
  items table names for that item, or ``frames`` (a strip of a video's frames). The file
  path is looked up by item id, never taken from the request;
- ``GET /api/state``: progress and labels of the current batch (``?batch=`` another) (JSON);
- ``GET /api/batches``, ``GET /api/items``, ``GET /api/suspects``, ``GET /api/map``: the data-set
  views' JSON (docs/serve.md); a bad query parameter is 400 with a one-line ``{"error"}``;
- ``POST /api/label`` ``{"item_id", "label", "annotator", "batch"?, "scope"?}`` and ``POST /api/undo``. A body
  larger than ``max_body_bytes`` (default :data:`MAX_BODY_BYTES`, 1 MiB; a label post is
  about 100 bytes) is refused with 413 and a JSON ``{"error"}`` without being read: by its
  ``Content-Length``, or as soon as a body without one passes the limit. A label that
  cannot be stored because the disk refuses the write is 507 (a locked or damaged database
  503), with the one-line error as ``{"error"}``.

Security model (docs/serve.md): on a loopback host every GET is open and a POST needs the
session token (header ``X-MMAL-Token``, which the page sends) or a same-origin header
(``Sec-Fetch-Site: same-origin`` or an ``Origin`` equal to the server's); the ``Host``
header must be a loopback name (no DNS rebinding). On any other host, every request needs
the token (``?token=`` once, then a SameSite=Strict cookie, or the header); a POST that
carries it only in the cookie also needs a same-origin header.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import numpy as np

from mmal.errors import LabelImportError, MmalError, StorageError, WorkspaceError
from mmal.serve import dataset_view as dv
from mmal.serve.body import BadBody, BodyTooLarge, json_object, read_capped
from mmal.serve.batch import (MEDIA, DatasetIndex, ItemCatalog, batch_cards, batch_info, labels_in_round, latest_batch,
                              round_pool)
from mmal.serve.labels import class_names, import_label_rows, parse_label, undo_label
from mmal.workspace import state as ws_state
from mmal.workspace.workspace import Workspace

HERE = Path(__file__).resolve().parent
SOURCE = "serve"
COOKIE = "mmal_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: largest request body the review page reads (``create_app(max_body_bytes=...)``)
MAX_BODY_BYTES = 1 << 20
#: the files ``GET /static/<name>`` serves (any other name is 404)
STATIC = {"review.js": "application/javascript", "dataset.js": "application/javascript", "review.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class Guard:
    """ASGI middleware: host check (loopback mode), token check, same-origin check on writes."""

    def __init__(self, app, *, token: str, require_token: bool):
        self.app, self.token, self.require_token = app, token, require_token

    def _ok(self, value) -> bool:
        return bool(value) and hmac.compare_digest(str(value).encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        req = Request(scope)
        host = req.headers.get("host", "")
        if not self.require_token and _host_name(host) not in LOOPBACK_NAMES:
            return await PlainTextResponse("invalid Host header", 400)(scope, receive, send)
        auth = req.headers.get("authorization", "")
        header_tok = req.headers.get("x-mmal-token") or (auth[7:] if auth.lower().startswith("bearer ") else None)
        by_header = self._ok(header_tok)
        by_cookie = self._ok(req.cookies.get(COOKIE))
        by_query = self._ok(req.query_params.get("token"))
        if self.require_token and by_query and req.method == "GET" and scope["path"] == "/":
            resp = RedirectResponse("/", 303)
            resp.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return await resp(scope, receive, send)
        if self.require_token and not (by_header or by_cookie or by_query):
            return await PlainTextResponse("token required", 401)(scope, receive, send)
        if req.method not in ("GET", "HEAD"):
            sfs = req.headers.get("sec-fetch-site")
            origin = req.headers.get("origin")
            same_origin = sfs == "same-origin" or (origin is not None and origin == f"{scope.get('scheme', 'http')}://{host}")
            if sfs is not None and sfs not in ("same-origin", "none"):
                same_origin = False  # a browser said it is cross-site: refuse whatever Origin claims
            if not (by_header or same_origin):
                return await PlainTextResponse("label posts need the token or a same-origin request", 403)(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _frames_jpeg(path: str, n_frames: int) -> bytes:
    from PIL import Image

    from mmal.data.media import load_video_frames

    frames = load_video_frames(path, n_frames)
    h = 120
    frames = [f.resize((max(1, round(f.width * h / f.height)), h)) for f in frames]
    strip = Image.new("RGB", (sum(f.width for f in frames) + 4 * (len(frames) - 1), h), (255, 255, 255))
    x = 0
    for f in frames:
        strip.paste(f, (x, 0))
        x += f.width + 4
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class NotFound(Exception):
    """A posted item or batch that is not there (404 with this line)."""


def create_app(directory, *, token: str, require_token: bool, annotator: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The review app for the workspace at ``directory``.

    ``token``: the session token (always set; the page embeds it for its own posts).
    ``require_token``: every request needs it (non-loopback hosts). ``annotator``: the
    default name recorded as provenance when a post names none. ``max_body_bytes``: the
    largest POST body read (larger: 413).
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    ws = Workspace(directory)
    catalog = ItemCatalog(ws)
    dataset = DatasetIndex(ws, catalog)
    latest_batch(ws)  # fail now (clear message) if there is nothing to review
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    n_frames = int(ws.setting("encode", "n_frames"))
    default_annotator = annotator

    n_classes_cache: dict[int, int] = {}

    def n_classes_for(batch) -> int:
        if batch.batch_id not in n_classes_cache:  # the scored pool of a batch does not change
            pool = round_pool(ws, batch.round)
            n_classes_cache[batch.batch_id] = max(ws.n_classes, 0 if pool is None else pool.n_classes)
        return n_classes_cache[batch.batch_id]

    def state(batch) -> dict:
        labels = labels_in_round(ws, batch.item_ids, batch.round)
        return {"batch": batch.batch_id, "round": batch.round, "total": len(batch.item_ids),
                "labeled": len(labels), "labels": labels}

    def nav_batches() -> list:
        return sorted(dataset.batches().values(), key=lambda b: -b.batch_id)

    def render_batch(batch, current: bool):
        names = class_names(ws, n_classes_for(batch))
        cards = batch_cards(ws, batch, catalog, names)
        html = env.get_template("review.html").render(
            batch=batch, cards=cards, names=names, n_labeled=sum(c["label"] is not None for c in cards),
            token=token, annotator=default_annotator or "", workspace=str(ws.dir), quote=_quote,
            info_json=json.dumps(batch.info, default=float, indent=1)[:4000], current=current, batches=nav_batches(),
            view="batch")
        return Response(html, media_type="text/html; charset=utf-8")

    def page(request: Request):
        return render_batch(latest_batch(ws), True)

    def batch_page(request: Request):
        try:
            batch = batch_info(ws, request.path_params["batch_id"])
        except WorkspaceError as e:
            return PlainTextResponse(str(e), 404)
        return render_batch(batch, batch.batch_id == latest_batch(ws).batch_id)

    def names_for(pv) -> list[str]:
        return class_names(ws, max(ws.n_classes, 0 if pv is None else pv.n_classes))

    def view_page(template: str, view: str):
        def handler(request: Request):
            try:
                pv = dataset.pool()
            except MmalError as e:
                return PlainTextResponse(str(e), 503)
            bs = nav_batches()
            html = env.get_template(template).render(
                names=names_for(pv), batches=bs, rounds=sorted({b.round for b in bs}), pool=pv, n_items=len(dataset),
                token=token, annotator=default_annotator or "", workspace=str(ws.dir), map_points=dv.MAP_POINTS,
                max_limit=dv.MAX_LIMIT, view=view, latest=bs[0] if bs else None)
            return Response(html, media_type="text/html; charset=utf-8")
        return handler

    def static(request: Request):
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        return FileResponse(HERE / "static" / name, media_type=STATIC[name])

    def media(request: Request):
        rest = request.path_params["rest"]
        item_id, _, modality = rest.rpartition("/")
        if modality == "frames":
            path = catalog.media_path(item_id, "video")
            if path is None or not Path(path).is_file():
                return PlainTextResponse("not found", 404)
            try:
                return Response(_frames_jpeg(path, n_frames), media_type="image/jpeg")
            except Exception:  # noqa: BLE001 - an undecodable video is a missing picture, not a server error
                return PlainTextResponse("not found", 404)
        path = catalog.media_path(item_id, modality) if modality in MEDIA else None
        if path is None or not Path(path).is_file():
            return PlainTextResponse("not found", 404)
        return FileResponse(path)

    def _bad(e) -> JSONResponse:
        return JSONResponse({"error": str(e)}, 400)

    def api_state(request: Request):
        raw = request.query_params.get("batch")
        if raw is None or raw == "":
            return JSONResponse(state(latest_batch(ws)))
        if not raw.isdigit():
            return _bad(f"batch: expected a batch id, got {raw!r}")
        try:
            return JSONResponse(state(batch_info(ws, int(raw))))
        except WorkspaceError as e:
            return JSONResponse({"error": str(e)}, 404)

    # ---- the data-set views --------------------------------------------------------------
    def pool_json(pv) -> dict | None:
        if pv is None:
            return None
        return {"round": pv.round, "version": pv.version, "n": len(pv.pool), "has_embedding": pv.pool.embedding is not None}

    def item_json(r: int, labels, pv, names) -> dict:
        k = str(dataset.ids[r])
        lab = int(labels[r])
        text = catalog.text[r]
        v = {"id": k, "split": str(dataset.split[r]), "text": None if text is None else str(text)[:300],
             "media": {m: True for m in catalog.paths if catalog.paths[m][r]},
             "label": None if lab < 0 else lab, "label_name": None if lab < 0 else _name(names, lab),
             "pred": None, "pred_name": None, "confidence": None, "top": [], "batches": dataset.batches_of(k)}
        if pv is not None and pv.prow[r] >= 0:
            p = np.asarray(pv.pool.probs[pv.prow[r]], np.float64)  # [C]
            order = np.argsort(-p, kind="stable")[:3]
            v.update(pred=int(pv.pred[r]), pred_name=_name(names, int(pv.pred[r])), confidence=round(float(pv.conf[r]), 4),
                     top=[[_name(names, int(c)), round(float(p[c]), 4)] for c in order])
        return v

    def api_batches(request: Request):
        out = []
        for b in nav_batches():
            out.append({"batch": b.batch_id, "round": b.round, "strategy": b.strategy, "budget": b.budget,
                        "size": len(b.item_ids), "labeled": len(labels_in_round(ws, b.item_ids, b.round))})
        return JSONResponse({"batches": out})

    def api_items(request: Request):
        pv = dataset.pool()
        names = names_for(pv)
        batches = dataset.batches()
        try:
            q = dv.parse_item_query(request.query_params, names, batch_ids=batches.keys(),
                                    rounds={b.round for b in batches.values()})
        except dv.QueryError as e:
            return _bad(e)
        labels = dataset.labels()
        in_batch = None
        if q.batch is not None:
            in_batch = dataset.in_batches([batches[q.batch]])
        if q.round is not None:
            m = dataset.in_batches([b for b in batches.values() if b.round == q.round])
            in_batch = m if in_batch is None else in_batch & m
        n = len(dataset)
        pred = np.full(n, -1, np.int64) if pv is None else pv.pred
        conf = np.full(n, np.nan) if pv is None else pv.conf
        rows = dv.filter_rows(q, ids=dataset.ids, labels=labels, pred=pred, conf=conf, split=dataset.split, in_batch=in_batch)
        shown = dv.page(rows, q.offset, q.limit)
        return JSONResponse({"total": int(len(rows)), "offset": q.offset, "limit": q.limit, "n_items": n,
                             "pool": pool_json(pv), "names": names,
                             "items": [item_json(int(r), labels, pv, names) for r in shown]})

    def judged(pv):
        """(judged probs [N, C], source [N]) in items order, cached per pool version."""
        key = ("judged", pv.version)
        if key not in dataset.cache:
            from mmal.select.lsb import AT_SELECTION

            pool, have = pv.pool, pv.prow >= 0
            n, c = len(dataset), pv.n_classes
            probs = np.full((n, c), np.nan)
            probs[have] = np.asarray(pool.probs, np.float64)[pv.prow[have]]
            at = None
            if pool.extras.get(AT_SELECTION) is not None and np.shape(pool.extras[AT_SELECTION]) == np.shape(pool.probs):
                at = np.full((n, c), np.nan)
                at[have] = np.asarray(pool.extras[AT_SELECTION], np.float64)[pv.prow[have]]
            scored = None
            if pool.labels is not None:
                scored = np.full(n, -1, np.int64)
                scored[have] = np.asarray(pool.labels)[pv.prow[have]]
            dataset.cache[key] = dv.judged_probabilities(probs, split=dataset.split, at_selection=at, scored_labels=scored)
        return dataset.cache[key]

    def api_suspects(request: Request):
        try:
            in_sample, offset, limit = dv.parse_suspect_query(request.query_params)
        except dv.QueryError as e:
            return _bad(e)
        pv = dataset.pool()
        names = names_for(pv)
        if pv is None:
            return JSONResponse({"pool": None, "names": names, "total": 0, "offset": offset, "limit": limit, "items": [],
                                 "counts": {}, "note": f"no scored pool yet: run `mmal train {ws.dir}` and `mmal score {ws.dir}`"})
        probs, source = judged(pv)
        labels = dataset.labels()
        labeled = (labels >= 0) & (pv.prow >= 0)
        oos = np.isin(source, dv.OUT_OF_SAMPLE)
        counts = {s: int((labeled & (source == s)).sum()) for s in dv.SOURCES}
        rows = dv.suspect_rows(probs, labels, labeled & (oos | in_sample))
        sc = dv.self_confidence(probs, labels)
        out = []
        for r in dv.page(rows, offset, limit):
            r = int(r)
            v = item_json(r, labels, pv, names)
            jp = int(np.argmax(probs[r]))
            v.update(judged_pred=jp, judged_pred_name=_name(names, jp), judged_conf=round(float(probs[r, jp]), 4),
                     self_confidence=round(float(sc[r]), 4), source=str(source[r]), source_text=dv.SOURCES[str(source[r])])
            out.append(v)
        n_oos = int((labeled & oos).sum())
        note = None
        if n_oos == 0:
            note = ("this scored pool has only in-sample predictions for its labeled items (the model was trained on "
                    "those labels, so it tends to agree with them); no out-of-sample view to judge labels by")
        return JSONResponse({"pool": pool_json(pv), "names": names, "total": int(len(rows)), "offset": offset,
                             "limit": limit, "in_sample": in_sample, "n_labeled": int(labeled.sum()),
                             "n_out_of_sample": n_oos, "counts": counts, "sources": dv.SOURCES, "note": note,
                             "items": out})

    def api_map(request: Request):
        try:
            dv.check_params(request.query_params, ())
        except dv.QueryError as e:
            return _bad(e)
        pv = dataset.pool()
        names = names_for(pv)
        if pv is None:
            return JSONResponse({"pool": None, "names": names, "n_total": 0, "n_shown": 0,
                                 "note": f"no scored pool yet: run `mmal score {ws.dir}`"})
        if pv.pool.embedding is None:
            return JSONResponse({"pool": pool_json(pv), "names": names, "n_total": 0, "n_shown": 0,
                                 "note": "the scored pool stores no embedding"})
        key = ("map", pv.version)
        if key not in dataset.cache:
            cand = np.flatnonzero(pv.prow >= 0)
            rows = cand[dv.sample_rows(len(cand))]
            emb = np.asarray(pv.pool.embedding[pv.prow[rows]], np.float64)  # [M, D]
            finite = np.isfinite(emb).all(axis=1)
            xy, explained = dv.pca_2d(emb[finite])
            dataset.cache[key] = (rows[finite], xy, explained, len(cand), int((~finite).sum()))
        rows, xy, explained, n_total, n_bad = dataset.cache[key]
        labels = dataset.labels()[rows]
        return JSONResponse({"pool": pool_json(pv), "names": names, "n_total": int(n_total), "n_shown": int(len(rows)),
                             "sampled": bool(len(rows) + n_bad < n_total), "n_nonfinite": n_bad,
                             "explained": [round(float(e), 4) for e in explained],
                             "ids": [str(k) for k in dataset.ids[rows]],
                             "x": [round(float(v), 4) for v in xy[:, 0]], "y": [round(float(v), 4) for v in xy[:, 1]],
                             "label": [int(v) for v in labels], "pred": [int(v) for v in pv.pred[rows]]})

    # ---- label posts ---------------------------------------------------------------------
    async def _body(request: Request) -> dict:
        try:
            return json_object(await read_capped(request, max_body_bytes))
        except BadBody as e:
            raise LabelImportError(str(e)) from None

    def _annotator(body) -> str | None:
        a = body.get("annotator") or default_annotator
        return None if a is None else str(a)[:200]

    def _target(body: dict, item_id: str):
        """(batch or None, round, n_classes) a post writes to: ``scope: "dataset"`` = any non-test item,
        stored under the current round; else the item must be in ``batch`` (default: the current one)."""
        scope, bid = body.get("scope"), body.get("batch")
        if scope not in (None, "batch", "dataset"):
            raise LabelImportError(f"scope must be 'batch' or 'dataset', got {scope!r}")
        if scope == "dataset":
            if bid is not None:
                raise LabelImportError("give either scope 'dataset' or a batch, not both")
            if item_id not in catalog:
                raise NotFound(f"item {item_id!r} is not in this workspace")
            if dataset.split[catalog.pos[item_id]] == "test":
                raise LabelImportError(f"item {item_id!r} is a test-split item: its gold label feeds `mmal evaluate`, "
                                       "so the page does not change it (`mmal label` refuses it too)")
            pv = dataset.pool()
            return None, ws_state.current_round(ws), max(ws.n_classes, 0 if pv is None else pv.n_classes)
        if bid is None:
            batch = latest_batch(ws)
            where = f"the current batch {batch.batch_id}"
        else:
            if isinstance(bid, bool) or not isinstance(bid, int):
                raise LabelImportError(f"batch must be a batch id (an integer), got {bid!r}")
            try:
                batch = batch_info(ws, bid)
            except WorkspaceError as e:
                raise NotFound(str(e)) from None
            where = f"batch {batch.batch_id}"
        if item_id not in batch.item_ids:
            raise NotFound(f"item {item_id!r} is not in {where}")
        return batch, batch.round, n_classes_for(batch)

    async def api_label(request: Request):
        try:
            body = await _body(request)
            item_id = str(body.get("item_id", ""))
            batch, rnd, n = await run_in_threadpool(_target, body, item_id)
            label = parse_label(ws, body.get("label"), n_classes=n)
        except LabelImportError as e:
            return JSONResponse({"error": str(e)}, 400)
        except NotFound as e:
            return JSONResponse({"error": str(e)}, 404)
        ann = _annotator(body)
        res = await run_in_threadpool(import_label_rows, ws, [(item_id, rnd, label)], source=SOURCE, annotator=ann)
        out = {"ok": True, "item_id": item_id, "round": rnd, "label": label, "annotator": ann,
               "previous": res["previous"][0]}
        if batch is None:
            from mmal.workspace.annotate import gold_replaced

            names = class_names(ws, n)
            out.update(label_name=_name(names, label), scope="dataset",
                       warning=await run_in_threadpool(gold_replaced, ws, res["replaced"]))
            return JSONResponse(out)
        st = await run_in_threadpool(state, batch)
        return JSONResponse({**out, "labeled": st["labeled"], "total": st["total"]})

    async def api_undo(request: Request):
        try:
            body = await _body(request)
            item_id = str(body.get("item_id", ""))
            batch, rnd, n = await run_in_threadpool(_target, body, item_id)
            if batch is None:  # scope dataset: the round the label went to, as /api/label answered
                r = body.get("round")
                if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                    raise LabelImportError(f"round must be the round /api/label answered (an integer), got {r!r}")
                rnd = r
            label = parse_label(ws, body.get("label"), n_classes=n)
            prev = body.get("previous")
            if prev is not None:
                if not isinstance(prev, dict) or not {"label", "source", "imported_at"} <= set(prev):
                    raise LabelImportError("previous must be null or {label, source, annotator, imported_at}")
                prev = {"label": parse_label(ws, prev["label"], n_classes=n), "source": str(prev["source"]),
                        "annotator": None if prev.get("annotator") is None else str(prev["annotator"]),
                        "imported_at": float(prev["imported_at"])}
        except (LabelImportError, TypeError, ValueError) as e:
            return JSONResponse({"error": str(e)}, 400)
        except NotFound as e:
            return JSONResponse({"error": str(e)}, 404)
        done = await run_in_threadpool(undo_label, ws, item_id, rnd, label=label, source=SOURCE, previous=prev)
        if batch is None:
            now = (await run_in_threadpool(ws.current_labels)).get(item_id)
            if not done:
                return JSONResponse({"error": "the label was changed since; nothing undone", "label": now}, 409)
            return JSONResponse({"ok": True, "item_id": item_id, "round": rnd, "label": now, "scope": "dataset"})
        st = await run_in_threadpool(state, batch)
        if not done:
            return JSONResponse({"error": "the label was changed since; nothing undone", **st}, 409)
        now = st["labels"].get(item_id)
        return JSONResponse({"ok": True, "item_id": item_id, "label": None if now is None else now["label"],
                             "labeled": st["labeled"], "total": st["total"]})

    def posting(handler):
        """413 for a body over the limit; the one-line error of a write the workspace refused as JSON."""
        async def wrapped(request: Request):
            try:
                return await handler(request)
            except BodyTooLarge:
                return JSONResponse({"error": f"request body larger than {max_body_bytes} bytes (the review page's "
                                              "limit; a label post is about 100 bytes)"}, 413)
            except StorageError as e:
                return JSONResponse({"error": str(e)}, 507)
            except WorkspaceError as e:
                return JSONResponse({"error": str(e)}, 503)
        return wrapped

    def reading(handler):
        """A data-set read that meets a pool being replaced or a locked database: 503 with the one line."""
        def wrapped(request: Request):
            try:
                return handler(request)
            except MmalError as e:
                return JSONResponse({"error": str(e)}, 503)
        return wrapped

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/batch/{batch_id:int}", batch_page, methods=["GET"]),
        Route("/dataset", view_page("dataset.html", "dataset"), methods=["GET"]),
        Route("/suspects", view_page("suspects.html", "suspects"), methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/media/{rest:path}", media, methods=["GET"]),
        Route("/api/state", api_state, methods=["GET"]),
        Route("/api/batches", reading(api_batches), methods=["GET"]),
        Route("/api/items", reading(api_items), methods=["GET"]),
        Route("/api/suspects", reading(api_suspects), methods=["GET"]),
        Route("/api/map", reading(api_map), methods=["GET"]),
        Route("/api/label", posting(api_label), methods=["POST"]),
        Route("/api/undo", posting(api_undo), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    return Guard(app, token=token, require_token=require_token)


def _name(names: list[str], k: int) -> str:
    return names[k] if 0 <= k < len(names) else str(k)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(str(s), safe="")
