"""``python -m spendtrace`` is the ``spendtrace`` CLI."""

from spendtrace.cli import main

raise SystemExit(main())
