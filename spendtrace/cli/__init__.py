"""The ``spendtrace`` command, an application on top of the server library.

``main`` (``python -m spendtrace.cli.main``, as the original README runs it) builds the parser;
every other module here adds subcommands (``plugins()``) and imports what it runs lazily.
"""
