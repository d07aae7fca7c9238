"""The review page as a Starlette app (served by uvicorn; see :func:`mmal.serve.serve`).

Routes (anything else is 404):

- ``GET /``: the current batch, one card per item (Jinja2 template ``review.html``);
- ``GET /static/review.js``, ``/static/review.css``: the page's script and style;
- ``GET /media/<item id>/<modality>``: the ``image``, ``video`` or ``audio`` file that the
  items table names for that item, or ``frames`` (a strip of a video's frames). The file
  path is looked up by item id, never taken from the request;
- ``GET /api/state``: progress and labels of the current batch (JSON);
- ``POST /api/label`` ``{"item_id", "label", "annotator"}`` and ``POST /api/undo``. A body
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

from mmal.errors import LabelImportError, StorageError, WorkspaceError
from mmal.serve.batch import MEDIA, ItemCatalog, batch_cards, labels_in_round, latest_batch, round_pool
from mmal.serve.labels import class_names, import_label_rows, parse_label, undo_label
from mmal.workspace.workspace import Workspace

HERE = Path(__file__).resolve().parent
SOURCE = "serve"
COOKIE = "mmal_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: largest request body the review page reads (``create_app(max_body_bytes=...)``)
MAX_BODY_BYTES = 1 << 20
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


class BodyTooLarge(Exception):
    pass


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

    def page(request: Request):
        batch = latest_batch(ws)
        names = class_names(ws, n_classes_for(batch))
        cards = batch_cards(ws, batch, catalog, names)
        html = env.get_template("review.html").render(
            batch=batch, cards=cards, names=names, n_labeled=sum(c["label"] is not None for c in cards),
            token=token, annotator=default_annotator or "", workspace=str(ws.dir), quote=_quote,
            info_json=json.dumps(batch.info, default=float, indent=1)[:4000])
        return Response(html, media_type="text/html; charset=utf-8")

    def static(request: Request):
        name = request.path_params["name"]
        files = {"review.js": "application/javascript", "review.css": "text/css"}
        if name not in files:
            return PlainTextResponse("not found", 404)
        return FileResponse(HERE / "static" / name, media_type=files[name])

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

    def api_state(request: Request):
        return JSONResponse(state(latest_batch(ws)))

    async def _read_capped(request: Request) -> bytes:
        length = request.headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > max_body_bytes:
            raise BodyTooLarge  # refused unread
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _body(request: Request) -> dict:
        try:
            body = json.loads(await _read_capped(request))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LabelImportError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise LabelImportError("request body must be a JSON object")
        return body

    def _annotator(body) -> str | None:
        a = body.get("annotator") or default_annotator
        return None if a is None else str(a)[:200]

    async def api_label(request: Request):
        try:
            body = await _body(request)
            batch = await run_in_threadpool(latest_batch, ws)
            item_id = str(body.get("item_id", ""))
            if item_id not in batch.item_ids:
                return JSONResponse({"error": f"item {item_id!r} is not in the current batch {batch.batch_id}"}, 404)
            label = parse_label(ws, body.get("label"), n_classes=await run_in_threadpool(n_classes_for, batch))
        except LabelImportError as e:
            return JSONResponse({"error": str(e)}, 400)
        ann = _annotator(body)
        res = await run_in_threadpool(import_label_rows, ws, [(item_id, batch.round, label)], source=SOURCE, annotator=ann)
        st = await run_in_threadpool(state, batch)
        return JSONResponse({"ok": True, "item_id": item_id, "round": batch.round, "label": label, "annotator": ann,
                             "previous": res["previous"][0], "labeled": st["labeled"], "total": st["total"]})

    async def api_undo(request: Request):
        try:
            body = await _body(request)
            batch = await run_in_threadpool(latest_batch, ws)
            item_id = str(body.get("item_id", ""))
            if item_id not in batch.item_ids:
                return JSONResponse({"error": f"item {item_id!r} is not in the current batch {batch.batch_id}"}, 404)
            n = await run_in_threadpool(n_classes_for, batch)
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
        done = await run_in_threadpool(undo_label, ws, item_id, batch.round, label=label, source=SOURCE, previous=prev)
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

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/media/{rest:path}", media, methods=["GET"]),
        Route("/api/state", api_state, methods=["GET"]),
        Route("/api/label", posting(api_label), methods=["POST"]),
        Route("/api/undo", posting(api_undo), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    return Guard(app, token=token, require_token=require_token)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(str(s), safe="")
