"""``mmal serve DIR``: a local review page for the current batch, earlier batches, the data set and suspect labels.

:func:`serve` starts a uvicorn server on :func:`mmal.serve.app.create_app`. Labels go
through the transaction of ``mmal label`` (:mod:`mmal.serve.labels`), with
``source='serve'`` and the annotator recorded.
"""

from __future__ import annotations

import secrets
import socket
import sys

DEFAULT_PORT = 8765


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as e:
        sock.close()
        from mmal.errors import ConfigError

        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(directory, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          annotator: str | None = None, log_level: str = "warning", out=None, max_body_bytes: int | None = None) -> None:
    """Serve the review page of the workspace at ``directory`` until interrupted.

    ``host`` defaults to loopback. Any other host requires a token: ``token`` if given,
    else one generated with :func:`secrets.token_urlsafe`; the URL carrying it is printed.
    ``port=0`` picks a free port (the printed URL names it). ``annotator`` is the default
    provenance name for posts that carry none (else the OS user name). ``max_body_bytes``: the
    largest POST body read (default :data:`mmal.serve.app.MAX_BODY_BYTES`, 1 MiB; larger: 413).
    """
    import uvicorn

    from mmal.serve.app import MAX_BODY_BYTES, create_app, is_loopback

    import getpass

    out = out or sys.stdout
    if not annotator:
        try:
            annotator = getpass.getuser()
        except (KeyError, OSError):  # no user name in this environment
            annotator = None
    require = not is_loopback(host) or token is not None
    token = token or secrets.token_urlsafe(24)
    app = create_app(directory, token=token, require_token=require, annotator=annotator,
                     max_body_bytes=MAX_BODY_BYTES if max_body_bytes is None else int(max_body_bytes))
    sock = _bind(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/" + (f"?token={token}" if require else "")
    print(f"mmal serve: reviewing {directory} at {url}", file=out, flush=True)
    if require:
        print(f"mmal serve: token {token} (needed for every request; open the URL above once)", file=out, flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
