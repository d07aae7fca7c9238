"""``python -m mmal.serve DIR [--host H] [--port N] [--token T] [--annotator NAME]`` (tests, scripts)."""

from __future__ import annotations

import argparse
import sys

from mmal.errors import MmalError
from mmal.serve import DEFAULT_PORT, serve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmal.serve", description="Review page for the current batch.")
    p.add_argument("directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--token", default=None)
    p.add_argument("--annotator", default=None)
    a = p.parse_args(argv)
    try:
        serve(a.directory, host=a.host, port=a.port, token=a.token, annotator=a.annotator)
    except MmalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
