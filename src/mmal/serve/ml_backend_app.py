"""The HTTP server of ``mmal labelstudio-backend WS`` around :class:`mmal.serve.ml_backend.LabelStudioBackend`.

Routes (anything else is a JSON 404; a wrong method a JSON 405):

- ``GET /health``, ``GET /status``: the model version and the latest training job;
- ``POST /setup``, ``/predict``, ``/webhook``, ``/job_status``: Label Studio's ML backend calls;
- ``GET /versions``: the model versions (one per scored round).

Every request needs the token: HTTP basic auth with the user name (default ``mmal``) and the
token as password (what Label Studio's *Connect Model* → *Basic Authentication* sends), or
``Authorization: Bearer <token>``; else 401. A body over ``max_body_bytes`` is 413 without
being read; a body that is not a JSON object 400. Every error is ``{"error": one line}``;
a workspace that refuses a write is 507 (disk) or 503 (locked, busy).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mmal.errors import LabelImportError, MmalError, StorageError, WorkspaceError
from mmal.serve.body import BadBody, BodyTooLarge, json_object, read_capped
from mmal.serve.ml_backend import LabelStudioBackend, RequestError

DEFAULT_PORT = 9090
DEFAULT_USER = "mmal"
#: Label Studio sends every task that lacks a prediction of the current model version in one
#: ``/predict`` request (about 1 KB a task), so the cap is larger than the review page's 1 MiB.
MAX_BODY_BYTES = 16 << 20


def authorized(header: str, *, token: str, user: str) -> bool:
    """True for ``Basic base64(user:token)`` or ``Bearer token`` (compared in constant time)."""
    scheme, _, value = (header or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            got_user, sep, got_pass = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(got_user.encode(), user.encode())
        ok_pass = hmac.compare_digest(got_pass.encode(), token.encode())
        return bool(sep) and ok_user and ok_pass
    return False


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": str(message).splitlines()[0] if message else "error", **extra}, status)


def create_backend_app(backend: LabelStudioBackend, *, token: str, user: str = DEFAULT_USER,
                       max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The Starlette app serving ``backend``; ``token`` (and ``user`` for basic auth) is required on every request."""
    if not token:
        raise ValueError("create_backend_app needs a token")

    def answer(fn, *args):
        try:
            status, body = fn(*args)
        except RequestError as e:
            return _error(e.status, str(e), **e.extra)
        except LabelImportError as e:
            return _error(400, str(e))
        except StorageError as e:
            return _error(507, str(e))
        except WorkspaceError as e:
            return _error(503, str(e))
        except MmalError as e:
            return _error(400, str(e))
        return JSONResponse(body, status)

    def get(fn):
        async def route(request: Request):
            return await run_in_threadpool(answer, fn)
        return route

    def post(fn):
        async def route(request: Request):
            try:
                body = json_object(await read_capped(request, max_body_bytes))
            except BodyTooLarge:
                return _error(413, f"request body larger than {max_body_bytes} bytes (--max-body-bytes)")
            except BadBody as e:
                return _error(400, str(e))
            return await run_in_threadpool(answer, fn, body)
        return route

    routes = [
        Route("/health", get(backend.health), methods=["GET"]),
        Route("/status", get(backend.health), methods=["GET"]),
        Route("/versions", get(backend.versions), methods=["GET"]),
        Route("/setup", post(backend.setup), methods=["POST"]),
        Route("/predict", post(backend.predict), methods=["POST"]),
        Route("/webhook", post(backend.webhook), methods=["POST"]),
        Route("/job_status", post(backend.job_status), methods=["POST"]),
    ]

    async def http_error(request, exc: HTTPException):
        what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(exc.status_code, what.get(exc.status_code, exc.detail))

    async def crash(request, exc):  # never a traceback in a response
        return _error(500, f"internal error ({type(exc).__name__}); see the backend's log")

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: crash})
    return AuthGuard(app, token=token, user=user)


class AuthGuard:
    """ASGI middleware: 401 (JSON, ``WWW-Authenticate: Basic``) unless the request carries the token."""

    def __init__(self, app, *, token: str, user: str):
        self.app, self.token, self.user = app, token, user

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not authorized(headers.get("authorization", ""), token=self.token, user=self.user):
                resp = JSONResponse({"error": "authorization required: basic auth (user and token) or Bearer token"},
                                    401, headers={"WWW-Authenticate": 'Basic realm="mmal labelstudio-backend"'})
                return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


def serve_backend(directory, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                  user: str = DEFAULT_USER, learner: str | None = None, strategy: str | None = None,
                  budget: int | None = None, max_body_bytes: int = MAX_BODY_BYTES, log_level: str = "warning",
                  out=None) -> None:
    """Serve the ML backend of the workspace at ``directory`` until interrupted (``mmal labelstudio-backend``).

    ``token`` None: one is generated (:func:`secrets.token_urlsafe`) and printed. ``port=0``
    picks a free port; the printed URL names it."""
    import secrets
    import sys

    import uvicorn

    from mmal.serve import _bind

    out = out or sys.stdout
    backend = LabelStudioBackend(directory, learner=learner, strategy=strategy, budget=budget)
    generated = not token
    token = token or secrets.token_urlsafe(24)
    app = create_backend_app(backend, token=token, user=user, max_body_bytes=int(max_body_bytes))
    sock = _bind(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"mmal labelstudio-backend: serving {backend.ws.dir} at http://{shown}:{real_port} "
          f"(model {backend.model_version() or 'none yet'}; training selects {backend.budget} with {backend.strategy!r})",
          file=out, flush=True)
    print(f"mmal labelstudio-backend: basic auth user {user!r}, password = the token"
          + (f" {token}" if generated else " you gave"), file=out, flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
