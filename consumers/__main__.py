"""``python -m consumers``: the same as ``spendtrace-consumer``."""

import sys

from consumers.cli import main

sys.exit(main())
