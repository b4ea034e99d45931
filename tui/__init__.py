"""spendtrace-tui: the terminal UI over the spendtrace store."""
