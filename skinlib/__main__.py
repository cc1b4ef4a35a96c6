"""``python -m skinlib``."""

import sys

from skinlib.cli import main

sys.exit(main())
