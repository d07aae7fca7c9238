"""Test helper, run as a script: ``python slow_import.py WS FILE DELAY [--allow-unbatched]``.

Imports FILE into the workspace WS with the workspace's one label writer and a pause of
DELAY seconds after each stored row, inside the transaction (through ``import_labels``'s
public ``on_row`` callback). When the transaction has begun it writes ``FILE.importing``, so
a test knows the window is open (to kill the process, or to race another writer against it).
"""

import sys
import time
from pathlib import Path

from mmal.workspace import Workspace
from mmal.workspace.annotate import import_labels


def main(argv):
    ws, path, delay = argv[0], Path(argv[1]), float(argv[2])

    def on_row(i):
        if i == 0:
            Path(str(path) + ".importing").write_text("1")
        time.sleep(delay)

    print(import_labels(Workspace(ws), path, allow_unbatched="--allow-unbatched" in argv, on_row=on_row))


if __name__ == "__main__":
    main(sys.argv[1:])
