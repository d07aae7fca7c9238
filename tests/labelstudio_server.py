"""A real Label Studio for the round-trip test: its own cached virtualenv, a local server,
and a tiny session-authenticated API client (standard library only).

- The virtualenv lives in ``~/.cache/mmal-test/labelstudio-venv-<version>`` (env
  ``MMAL_TEST_CACHE`` moves the cache); it is created with pip on first use and reused.
- A fresh Label Studio data dir needs several minutes of database migrations on a small
  machine, so the first start migrates a *template* data dir next to the venv (with the
  test user, created from ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD``); each test
  then copies the template into its temporary folder.
- Label Studio 1.23 disables legacy API tokens for new organisations, so the client logs in
  with the user's e-mail and password (Django session + CSRF token), as the web page does.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

VERSION = "1.23.2"
USER = "mmal-test@example.com"
PASSWORD = "mmal-test-password-1"


def cache_dir() -> Path:
    return Path(os.environ.get("MMAL_TEST_CACHE", Path.home() / ".cache" / "mmal-test"))


def venv_dir() -> Path:
    return cache_dir() / f"labelstudio-venv-{VERSION}"


def template_dir() -> Path:
    return cache_dir() / f"labelstudio-data-{VERSION}"


class RegistryUnreachable(RuntimeError):
    pass


def ensure_venv(timeout=1500) -> Path:
    """The ``label-studio`` executable of the cached venv; installs it when missing."""
    exe = venv_dir() / "bin" / "label-studio"
    ok = venv_dir() / ".installed"
    if exe.exists() and ok.exists():
        return exe
    shutil.rmtree(venv_dir(), ignore_errors=True)
    venv_dir().parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True, timeout=120)
    r = subprocess.run([str(venv_dir() / "bin" / "pip"), "install", "-q", f"label-studio=={VERSION}"],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        shutil.rmtree(venv_dir(), ignore_errors=True)
        probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir() / "probe"),
                                "six"], capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            raise RegistryUnreachable(f"package registry unreachable: {probe.stderr.strip().splitlines()[-1:]}")
        raise RuntimeError(f"pip install label-studio=={VERSION} failed: {r.stderr[-2000:]}")
    ok.write_text(VERSION)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir: Path) -> dict:
    return dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LABEL_STUDIO_USERNAME=USER,
                LABEL_STUDIO_PASSWORD=PASSWORD, LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
                LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false", PYTHONUNBUFFERED="1")


class Server:
    """``label-studio start`` on 127.0.0.1 with a data dir; :meth:`stop` kills its process group."""

    def __init__(self, exe: Path, data_dir: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir)],
            env=_env(data_dir), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=3) as r:
                    if json.load(r).get("status") == "UP":
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"label-studio not healthy after {timeout:.0f} s; see {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.log.close()


def ensure_template(exe: Path, timeout=900) -> Path:
    """A migrated data dir with the test user (made once, then reused)."""
    tpl = template_dir()
    if (tpl / ".ready").exists():
        return tpl
    shutil.rmtree(tpl, ignore_errors=True)
    tpl.mkdir(parents=True)
    srv = Server(exe, tpl, cache_dir() / f"labelstudio-template-{VERSION}.log")
    try:
        srv.wait_healthy(timeout)
        Client(srv.url).login()  # the user exists
    finally:
        srv.stop()
    (tpl / ".ready").write_text(VERSION)
    return tpl


def fresh_data_dir(dest: Path) -> Path:
    """A copy of the migrated template data dir at ``dest``; returns the ``label-studio``
    executable (:class:`RegistryUnreachable` when the venv cannot be made)."""
    exe = ensure_venv()
    shutil.copytree(ensure_template(exe), dest)
    return exe


class Client:
    """Session-authenticated JSON client for the Label Studio API."""

    def __init__(self, url: str):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self):
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def login(self):
        self.opener.open(self.url + "/user/login/", timeout=60).read()
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": self._csrf(), "email": USER, "password": PASSWORD}).encode()
        req = urllib.request.Request(self.url + "/user/login/", data=body, headers={"Referer": self.url + "/user/login/"})
        self.opener.open(req, timeout=60).read()
        if not any(c.name == "sessionid" for c in self.jar):
            raise RuntimeError("label-studio login failed")
        return self

    def request(self, method, path, payload=None, raw=False):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Content-Type": "application/json", "X-CSRFToken": self._csrf(), "Referer": self.url + "/"})
        try:
            with self.opener.open(req, timeout=120) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None
        return body if raw else json.loads(body)
