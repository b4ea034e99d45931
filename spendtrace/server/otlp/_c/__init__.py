"""The OTLP receiver's C extension, ``wire`` (``wire.c``): built by setup.py where a C compiler is found.

Nothing else lives here: the package only gives the extension a parent that imports nothing, so the
import graph (``tests/test_architecture.py``) sees no cycle through the ``otlp`` package.
"""
