"""``python -m spendtrace.cli`` is the ``spendtrace`` command."""

from spendtrace.cli.main import main

raise SystemExit(main())
