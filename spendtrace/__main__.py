"""``python -m spendtrace`` is the ``spendtrace`` CLI."""

from spendtrace.cli.main import main

raise SystemExit(main())
