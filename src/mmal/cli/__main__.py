"""``python -m mmal.cli``."""

import sys

from mmal.cli import main

sys.exit(main())
